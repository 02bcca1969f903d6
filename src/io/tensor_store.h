// TensorStore: the tensors of a checkpoint directory, in one model.safetensors or sharded
// through model.safetensors.index.json ({"weight_map": {tensor name: shard file}}).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/safetensors.h"

namespace moerun::io {

// A tensor and the mapped file that holds it (kept alive by the pointer).
struct StoredTensor {
  std::shared_ptr<const SafetensorsFile> file;
  const TensorInfo* info = nullptr;

  std::span<const std::byte> bytes() const { return file->bytes(*info); }
  // "'name' in /dir/model-00001-of-00002.safetensors", for messages.
  std::string where() const;
};

class TensorStore {
 public:
  // Reads the index, or finds model.safetensors; shards are opened (mapped) on first use.
  explicit TensorStore(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  bool sharded() const { return sharded_; }
  // The shard file names (one for an unsharded checkpoint).
  std::vector<std::string> files() const;
  // Every file the store reads, as paths: the index (sharded) and the shards.
  std::vector<std::filesystem::path> paths() const;

  bool contains(std::string_view name) const;
  // Rejects a missing tensor, naming the directory (and the shard the index points to).
  StoredTensor at(std::string_view name) const;

 private:
  std::shared_ptr<const SafetensorsFile> open(const std::string& file) const;

  std::filesystem::path dir_;
  bool sharded_ = false;
  std::map<std::string, std::string, std::less<>> weight_map_;  // tensor -> shard (sharded only)
  mutable std::map<std::string, std::shared_ptr<const SafetensorsFile>> open_;
};

}  // namespace moerun::io

#include "io/tensor_store.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "io/json_brief.h"
#include "moerun/errors.h"

namespace moerun::io {

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

// A shard name from the index must stay inside the checkpoint directory.
bool plain_file_name(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name != "." && name != "..";
}

}  // namespace

std::string StoredTensor::where() const { return "'" + info->name + "' in " + file->path(); }

TensorStore::TensorStore(const std::filesystem::path& dir) : dir_(dir) {
  const std::filesystem::path index_path = dir / kIndexName;
  if (std::filesystem::exists(index_path)) {
    sharded_ = true;
    const std::string index = index_path.string();
    std::ifstream in(index_path, std::ios::binary);
    if (!in) throw Error(index + ": cannot open");
    std::ostringstream text;
    text << in.rdbuf();
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text.str());
    } catch (const nlohmann::json::exception& e) {
      throw Error(index + ": malformed JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains("weight_map") || !j.at("weight_map").is_object()) {
      throw Error(index + ": malformed index: no \"weight_map\" object");
    }
    for (const auto& [name, file] : j.at("weight_map").items()) {
      if (!file.is_string() || !plain_file_name(file.get<std::string>())) {
        throw Error(index + ": weight_map entry '" + name + "' names " + json_brief(file) +
                    ", not a file in " + dir.string());
      }
      weight_map_.emplace(name, file.get<std::string>());
    }
    return;
  }
  if (!std::filesystem::exists(dir / kSingleName)) {
    throw Error(dir.string() + ": neither " + kIndexName + " nor " + kSingleName + " found");
  }
}

std::vector<std::string> TensorStore::files() const {
  if (!sharded_) return {kSingleName};
  std::set<std::string> unique;
  for (const auto& [name, file] : weight_map_) unique.insert(file);
  return {unique.begin(), unique.end()};
}

std::vector<std::filesystem::path> TensorStore::paths() const {
  std::vector<std::filesystem::path> paths;
  if (sharded_) paths.push_back(dir_ / kIndexName);
  for (const std::string& file : files()) paths.push_back(dir_ / file);
  return paths;
}

std::shared_ptr<const SafetensorsFile> TensorStore::open(const std::string& file) const {
  auto it = open_.find(file);
  if (it == open_.end()) {
    it = open_.emplace(file, std::make_shared<const SafetensorsFile>(dir_ / file)).first;
  }
  return it->second;
}

bool TensorStore::contains(std::string_view name) const {
  if (sharded_) return weight_map_.find(name) != weight_map_.end();
  return open(kSingleName)->find(name) != nullptr;
}

StoredTensor TensorStore::at(std::string_view name) const {
  if (!sharded_) {
    auto file = open(kSingleName);
    const TensorInfo* info = file->find(name);
    if (info == nullptr) throw Error(file->path() + ": missing tensor '" + std::string(name) + "'");
    return {std::move(file), info};
  }
  const auto it = weight_map_.find(name);
  if (it == weight_map_.end()) {
    throw Error((dir_ / kIndexName).string() + ": missing tensor '" + std::string(name) +
                "' (not in weight_map)");
  }
  auto file = open(it->second);
  const TensorInfo* info = file->find(name);
  if (info == nullptr) {
    throw Error(file->path() + ": missing tensor '" + std::string(name) + "' (" + kIndexName +
                " places it in this shard)");
  }
  return {std::move(file), info};
}

}  // namespace moerun::io

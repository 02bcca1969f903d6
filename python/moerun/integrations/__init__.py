"""Adapters that put moerun inside inference engines: moerun.integrations.sglang (a runner core for
SGLang's out-of-tree registry) and moerun.integrations.vllm (experts classes for vLLM's modular and
monolithic fused-MoE paths). Each imports its engine only when used; docs/python.md names the
engine versions they follow."""

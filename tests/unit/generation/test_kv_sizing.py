"""vLLM's KV cache sized from what the run needs (generation.vllm.kv_cache_memory_bytes unset)."""

from types import SimpleNamespace

from nemo_grpo.generation.vllm_backend import KV_BLOCK_TOKENS, KV_FLOOR_BYTES, kv_cache_bytes

QWEN_1_5B = SimpleNamespace(num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, hidden_size=1536)


def test_layers_x_k_and_v_x_kv_heads_x_head_dim_x_dtype_per_token_times_sequences_and_length():
    per_token = 28 * 2 * 2 * 128 * 2  # bf16: 28 KiB a token
    got = kv_cache_bytes(QWEN_1_5B, dtype_bytes=2, in_flight=[(64, 8192)])
    assert got == int(64 * 8192 * per_token * 1.25)


def test_the_largest_batch_in_flight_sizes_it_not_the_most_sequences_at_the_longest_length():
    # the CPU demo: a training step of 32 sequences up to 256 tokens, validation of 128 up to 118
    per_token = 28 * 2 * 2 * 128 * 4
    got = kv_cache_bytes(QWEN_1_5B, dtype_bytes=4, in_flight=[(32, 256), (128, 118)])
    assert KV_BLOCK_TOKENS == 128  # vLLM-CPU's block
    assert got == int(128 * 128 * per_token * 1.25)  # validation's, a block each: half of 128 x 256


def test_lengths_round_up_to_whole_blocks_and_a_small_run_gets_the_floor():
    a = kv_cache_bytes(QWEN_1_5B, dtype_bytes=4, in_flight=[(256, 1000)])
    assert a == kv_cache_bytes(QWEN_1_5B, dtype_bytes=4, in_flight=[(256, 1024)])
    tiny = SimpleNamespace(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=128)
    assert kv_cache_bytes(tiny, dtype_bytes=4, in_flight=[(16, 96)]) == KV_FLOOR_BYTES


def test_explicit_head_dim_and_a_text_config_are_used():
    inner = SimpleNamespace(num_hidden_layers=10, num_attention_heads=8, num_key_value_heads=None, hidden_size=512,
                            head_dim=128)
    got = kv_cache_bytes(SimpleNamespace(text_config=inner), dtype_bytes=2, in_flight=[(100, 2048)])
    assert got == int(100 * 2048 * (10 * 2 * 8 * 128 * 2) * 1.25)


def test_with_max_seqs_a_batch_counts_only_the_sequences_run_at_once():
    # the CPU demo's engine runs a training step's 32 sequences at once; validation's 128 go in waves
    per_token = 28 * 2 * 2 * 128 * 4
    got = kv_cache_bytes(QWEN_1_5B, dtype_bytes=4, in_flight=[(32, 256), (128, 118)], max_seqs=32)
    assert got == int(32 * 256 * per_token * 1.25)  # the step's, no longer validation's 128 x 128
    assert kv_cache_bytes(QWEN_1_5B, dtype_bytes=4, in_flight=[(8, 256)], max_seqs=32) == int(8 * 256 * per_token * 1.25)

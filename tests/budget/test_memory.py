"""Measured memory of one training step (the trainer's), and byte sizes, on the CPU with small models."""

from __future__ import annotations

import pytest
from step_models import mem, small_gn_net

from videogn.budget import measure_step_memory, parse_bytes

def test_memory_grows_with_batch_and_frames():
    base = mem(8, 48, 2)
    assert mem(8, 48, 4) > base
    assert mem(16, 48, 2) > base
    assert mem(8, 64, 2) > base


def test_measurement_counts_the_training_tensors_and_repeats():
    m = measure_step_memory(small_gn_net, 4, 16, 2, num_classes=5, device="cpu")
    params = sum(p.numel() * 4 for p in small_gn_net().parameters())
    assert m.model_bytes == params
    # parameters + gradients + momentum + the first conv's output for 2 clips, at least
    first_activation = 2 * 16 * 4 * 16 * 16 * 4  # (N, C, T, H, W) fp32
    assert m.peak_bytes >= 3 * params + first_activation
    assert measure_step_memory(small_gn_net, 4, 16, 2, num_classes=5, device="cpu").peak_bytes == m.peak_bytes


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match=r"method must be one of .* got 'psutil'"):
        measure_step_memory(small_gn_net, 4, 16, 1, device="cpu", method="psutil")
    with pytest.raises(ValueError, match=r"method='cuda' does not measure device 'cpu'"):
        measure_step_memory(small_gn_net, 4, 16, 1, device="cpu", method="cuda")
    with pytest.raises(ValueError, match=r"precision must be one of \('fp32', 'bf16', 'fp16'\), got 'int8'"):
        measure_step_memory(small_gn_net, 4, 16, 1, device="cpu", precision="int8")
    with pytest.raises(ValueError, match=r"batch_size .* got 0"):
        measure_step_memory(small_gn_net, 4, 16, 0, device="cpu")
    with pytest.raises(ValueError, match=r"device must be .* got 'tpu'"):
        measure_step_memory(small_gn_net, 4, 16, 1, device="tpu")
    with pytest.raises(ValueError, match=r"unknown model 'i3d_huge'"):
        measure_step_memory("i3d_huge", 4, 16, 1, device="cpu")
    with pytest.raises(ValueError, match="needs a registered model name"):
        measure_step_memory(small_gn_net, 4, 16, 1, device="cpu", method="rss")


def test_parse_bytes():
    assert parse_bytes("4GiB") == 4 * 2**30
    assert parse_bytes("1.5G") == int(1.5 * 2**30)
    assert parse_bytes("500MB") == 500 * 10**6
    assert parse_bytes("2e9") == 2 * 10**9
    assert parse_bytes(123) == 123
    with pytest.raises(ValueError, match=r"got '12 parsecs'"):
        parse_bytes("12 parsecs")


def test_rss_method_reports_the_same_model_in_a_subprocess():
    # RSS depends on the allocator and on pages kept from earlier work: only its form is promised
    rss = measure_step_memory("i3d_tiny", 8, 64, 8, num_classes=5, device="cpu", method="rss")
    alloc = measure_step_memory("i3d_tiny", 8, 64, 8, num_classes=5, device="cpu")
    assert rss.method == "rss" and isinstance(rss.peak_bytes, int) and rss.peak_bytes >= 0
    assert rss.model_bytes == alloc.model_bytes > 0

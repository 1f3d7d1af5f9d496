"""Clip shapes, the schedules that pick them per epoch, and the one learning-rate rule."""

from __future__ import annotations

import pytest

from videogn.budget import (
    SCHEDULES,
    ClipShape,
    ScheduleStage,
    ShapeSchedule,
    batch_lr_scale,
    build_schedule,
    constant_memory,
    fixed,
    multigrid,
)


def test_clip_shape_validates_and_counts():
    s = ClipShape(16, 112, 4)
    assert s.voxels == 16 * 112 * 112 * 4 and s.frames == 64
    with pytest.raises(ValueError, match=r"batch_size .* got 0"):
        ClipShape(16, 112, 0)
    with pytest.raises(ValueError, match=r"num_frames .* got 2\.5"):
        ClipShape(2.5, 112, 4)


def test_batch_lr_scale_is_the_linear_rule():
    assert batch_lr_scale(8, 4, 64) == 0.5
    assert batch_lr_scale(16, 1, 16) == 1.0
    assert batch_lr_scale(3, 2, None) == 1.0
    with pytest.raises(ValueError, match=r"reference_batch_size .* got 0"):
        batch_lr_scale(8, 1, 0)
    with pytest.raises(ValueError, match=r"world_size .* got 0"):
        batch_lr_scale(8, 0, 64)


def test_fixed_is_one_shape_for_every_epoch():
    sched = fixed(32, 224, 8)
    assert sched.shapes == (ClipShape(32, 224, 8),)
    assert sched.voxel_budget == 32 * 224 * 224 * 8
    assert sched.shapes_at(0) == sched.shapes_at(1000)


def test_constant_memory_from_base_gives_the_paper_pairs():
    sched = constant_memory((8, 32), crop_size=112)
    assert [(s.num_frames, s.batch_size) for s in sched.shapes] == [(8, 32), (16, 16), (32, 8), (64, 4)]
    assert {s.voxels for s in sched.shapes} == {sched.voxel_budget}
    # the linear rule gives each shape its B over the base B
    assert [batch_lr_scale(s.batch_size, 1, 32) for s in sched.shapes] == [1.0, 0.5, 0.25, 0.125]


def test_constant_memory_rounds_down_into_the_budget():
    sched = constant_memory((8, 10), crop_size=56, lengths=(8, 12, 24))
    assert [s.batch_size for s in sched.shapes] == [10, 6, 3]  # floor(80 / T)
    assert all(s.voxels <= sched.voxel_budget for s in sched.shapes)


def test_constant_memory_scales_pairs_to_a_budget():
    pairs = [(8, 32), (16, 16), (32, 8), (64, 4)]
    half = 8 * 112 * 112 * 16
    sched = constant_memory(crop_size=112, pairs=pairs, voxel_budget=half)
    assert [(s.num_frames, s.batch_size) for s in sched.shapes] == [(8, 16), (16, 8), (32, 4), (64, 2)]
    unscaled = constant_memory(crop_size=112, pairs=pairs)
    assert [(s.num_frames, s.batch_size) for s in unscaled.shapes] == pairs


def test_constant_memory_errors_name_the_field():
    with pytest.raises(ValueError, match=r"lengths item 64 does not fit voxel_budget=.*"):
        constant_memory((8, 4), crop_size=112)  # a budget of 32 frames: 64 cannot fit
    with pytest.raises(ValueError, match="exactly one of base or pairs"):
        constant_memory(crop_size=112)
    with pytest.raises(ValueError, match=r"pair \(64, 1\) scaled to voxel_budget=.* leaves batch_size 0"):
        constant_memory(crop_size=8, pairs=[(8, 16), (64, 1)], voxel_budget=8 * 64 * 4)
    with pytest.raises(ValueError, match=r"crop_size .* got 0"):
        constant_memory((8, 2), crop_size=0)


def test_schedule_rejects_a_shape_over_its_budget():
    with pytest.raises(ValueError, match=r"needs 200 voxels .* over voxel_budget=100"):
        ShapeSchedule("fixed", (ScheduleStage((ClipShape(2, 10, 1),)),), voxel_budget=100)
    with pytest.raises(ValueError, match=r"order must be one of .* got 'sorted'"):
        ShapeSchedule("fixed", (ScheduleStage((ClipShape(1, 1, 1),)),), voxel_budget=1, order="sorted")


def test_multigrid_cycles_at_constant_memory_with_linear_lr():
    sched = multigrid(32, 224, 8, epochs=10)
    budget = 32 * 224 * 224 * 8
    assert sched.voxel_budget == budget
    assert sum(st.epochs for st in sched.stages) == 10
    for st in sched.stages:
        main = st.shapes[-1]  # the stage's own shape closes its short cycle
        assert batch_lr_scale(main.batch_size, 1, 8) == main.batch_size / 8
        for s in st.shapes:
            # floor rounding keeps every shape within the budget and close to it
            assert 0.95 * budget <= s.voxels <= budget, s
            assert s.num_frames == main.num_frames
    # the long cycle: (T/4, S/sqrt2, 8B) ... (T, S, B); the run ends on the base shape
    mains = [st.shapes[-1] for st in sched.stages]
    assert [(m.num_frames, m.crop_size, m.batch_size) for m in mains] == [
        (8, 158, 64), (16, 158, 32), (16, 224, 16), (32, 224, 8)]
    # short-cycle crops are base S x 1/2 and x 1/sqrt2, then the stage's own crop
    assert [s.crop_size for s in sched.stages[0].shapes] == [112, 158, 158]
    assert [s.crop_size for s in sched.stages[3].shapes] == [112, 158, 224]
    assert [s.batch_size for s in sched.stages[3].shapes] == [32, 16, 8]
    assert sched.shapes_at(9)[-1] == ClipShape(32, 224, 8)
    assert sched.shapes_at(500) == sched.shapes_at(9)
    assert [sched.stage_index(e) for e in range(10)] == [0, 0, 1, 1, 2, 2, 2, 3, 3, 3]


def test_multigrid_options():
    no_short = multigrid(16, 112, 4, epochs=4, short_cycle=())
    assert all(len(st.shapes) == 1 for st in no_short.stages)
    twice = multigrid(16, 112, 4, epochs=8, num_long_cycles=2)
    assert len(twice.stages) == 8 and twice.stages[0].shapes == twice.stages[4].shapes
    with pytest.raises(ValueError, match=r"epochs=3 is fewer than the 4 long-cycle stages"):
        multigrid(16, 112, 4, epochs=3)
    with pytest.raises(ValueError, match=r"long_cycle spatial factor .* got 1\.5"):
        multigrid(16, 112, 4, epochs=4, long_cycle=[(1.0, 1.5)])


def test_build_schedule_dispatches_and_names_bad_kind():
    assert set(SCHEDULES) == {"fixed", "constant_memory", "multigrid"}
    base = ClipShape(8, 56, 4)  # (T, S, B), the one order
    assert build_schedule("fixed", base).shapes == (base,)
    cm = build_schedule("constant_memory", ClipShape(8, 56, 8), lengths=[8, 16])
    assert [s.batch_size for s in cm.shapes] == [8, 4]
    assert build_schedule("multigrid", base, epochs=4) == multigrid(8, 56, 4, epochs=4)
    with pytest.raises(ValueError, match=r"schedule 'multigrid' spreads its stages over the run's epochs: set trainer\.epochs"):
        build_schedule("multigrid", base)
    with pytest.raises(ValueError, match=r"unknown clip-shape schedule 'cyclic'; valid names: constant_memory, fixed"):
        build_schedule("cyclic", base)
    with pytest.raises(ValueError, match=r"schedule 'constant_memory' has no option\(s\) \['lenghts'\]; "
                                         r"its options: lengths, pairs, voxel_budget, order"):
        build_schedule("constant_memory", base, lenghts=[8])
    # an option of another schedule is refused by name, listing the chosen one's options
    with pytest.raises(ValueError, match=r"schedule 'fixed' has no option\(s\) \['lengths'\]; its options: none"):
        build_schedule("fixed", base, lengths=[8, 16])
    with pytest.raises(ValueError, match=r"short_cycle factor must be a number in \(0, 1\], got 2"):
        build_schedule("multigrid", base, epochs=4, short_cycle=[2])

import numpy as np
import pytest

from napari_impc_dl.inference.tiling import plan_tiles


@pytest.mark.parametrize("shape", [(4096, 4096), (1000, 5000), (300, 200), (64, 64), (50, 2000), (1030, 1030), (777, 1531)])
@pytest.mark.parametrize("tile,halo", [(1024, 16), (256, 32), (512, 0)])
def test_cores_partition_the_plane_and_keep_halo_context(shape, tile, halo):
    plan = plan_tiles(shape, tile, halo, step=32, min_tile=64)
    cover = np.zeros(shape, np.int32)
    th, tw = plan.tile_shape
    assert th % 32 == 0 and tw % 32 == 0
    for t in plan.tiles:
        assert t.y1 - t.y0 + t.py == th and t.x1 - t.x0 + t.px == tw  # all tiles batchable
        assert t.y0 % 32 == 0 and t.x0 % 32 == 0  # aligned with the network's pooling grid
        assert t.py < 32 and t.px < 32 or len(plan.tiles) == 1  # padding only rounds the image up
        assert 0 <= t.y0 <= t.cy0 < t.cy1 <= t.y1 <= shape[0]
        assert 0 <= t.x0 <= t.cx0 < t.cx1 <= t.x1 <= shape[1]
        # an inner core edge has at least `halo` pixels of context
        if t.cy0 > 0:
            assert t.cy0 - t.y0 >= halo
        if t.cy1 < shape[0]:
            assert t.y1 - t.cy1 >= halo
        if t.cx0 > 0:
            assert t.cx0 - t.x0 >= halo
        if t.cx1 < shape[1]:
            assert t.x1 - t.cx1 >= halo
        cover[t.cy0 : t.cy1, t.cx0 : t.cx1] += 1
    assert (cover == 1).all()


def test_grid_is_fitted_so_the_halo_costs_little():
    assert plan_tiles((4096, 4096), 1024, 16).overhead < 1.07
    assert plan_tiles((16384, 16384), 1024, 16).overhead < 1.07
    assert plan_tiles((2048, 2048), 1024, 16).overhead < 1.07


def test_small_plane_is_one_padded_tile():
    plan = plan_tiles((300, 200), 1024, 16)
    t = plan.tiles[0]
    assert len(plan.tiles) == 1 and plan.tile_shape == (320, 224) and (t.py, t.px) == (20, 24)


def test_fixed_tile_models():
    plan = plan_tiles((100, 300), 999, 8, step=1, min_tile=1, fixed=64)
    assert plan.tile_shape == (64, 64) and all(t.y1 - t.y0 == 64 for t in plan.tiles)
    plan = plan_tiles((40, 40), 999, 8, step=1, min_tile=1, fixed=64)
    assert plan.tile_shape == (64, 64) and (plan.tiles[0].py, plan.tiles[0].px) == (24, 24)


def test_tile_too_small_for_halo_is_refused():
    with pytest.raises(ValueError, match="too small"):
        plan_tiles((4096, 4096), 64, 32)

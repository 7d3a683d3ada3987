"""core.streams: the grid against scVelo's compute_velocity_on_grid; streamlines on
fields whose direction and speed are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from core.streams import Grid, streamlines, velocity_grid

compute_velocity_on_grid = pytest.importorskip(
    "scvelo.plotting.velocity_embedding_grid"
).compute_velocity_on_grid


@pytest.fixture(scope="module")
def cells():
    """2000 cells in a Gaussian blob with a noisy rotation field and 3 invalid cells."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 2)) * [2.0, 1.0]
    V = np.c_[-X[:, 1], X[:, 0]] + 0.2 * rng.normal(size=X.shape)
    V[:3] = np.nan
    return X, V


def test_stream_grid_equals_scvelo(cells):
    X, V = cells
    X_ref, V_ref = compute_velocity_on_grid(
        X, V, smooth=0.7, min_mass=3, cutoff_perc=10, adjust_for_stream=True, autoscale=False
    )
    grid = velocity_grid(X, V, smooth=0.7, min_mass=3, cutoff_perc=10)
    np.testing.assert_allclose(grid.x, X_ref[0])
    np.testing.assert_allclose(grid.y, X_ref[1])
    masked = np.isnan(V_ref[0])  # scVelo writes NaN into the first component only
    assert 0 < masked.sum() < masked.size
    np.testing.assert_array_equal(np.isnan(grid.u), masked)
    np.testing.assert_array_equal(np.isnan(grid.v), masked)
    np.testing.assert_allclose(grid.u[~masked], V_ref[0][~masked], rtol=1e-10)
    np.testing.assert_allclose(grid.v[~masked], V_ref[1][~masked], rtol=1e-10)


def test_arrow_grid_equals_scvelo(cells):
    X, V = cells
    X_ref, V_ref = compute_velocity_on_grid(X, V, density=0.6, smooth=0.5, min_mass=2)
    grid = velocity_grid(X, V, density=0.6, min_mass=2, mode="arrows")
    kept = ~np.isnan(grid.u.ravel())
    nodes = np.stack([m.ravel() for m in np.meshgrid(grid.x, grid.y)], axis=1)
    np.testing.assert_allclose(nodes[kept], X_ref)
    np.testing.assert_allclose(np.c_[grid.u.ravel(), grid.v.ravel()][kept], V_ref, rtol=1e-8)


def test_neighbour_cap_equals_scvelo_with_that_many_neighbours(cells):
    X, V = cells
    _, V_ref = compute_velocity_on_grid(
        X, V, n_neighbors=12, adjust_for_stream=True, autoscale=False
    )
    grid = velocity_grid(X, V, max_neighbors=12)  # default N/50 = 39 is capped to 12
    masked = np.isnan(V_ref[0])
    np.testing.assert_array_equal(np.isnan(grid.u), masked)
    np.testing.assert_allclose(grid.u[~masked], V_ref[0][~masked], rtol=1e-10)


def field(function) -> Grid:
    """A 40×40 grid on [-1, 1]² with velocity function(x, y) -> (u, v)."""
    x = y = np.linspace(-1.0, 1.0, 40)
    u, v = function(*np.meshgrid(x, y))
    return Grid(x, y, u, v, np.ones_like(u))


def test_constant_field_gives_parallel_lines_of_constant_speed():
    lines = streamlines(field(lambda x, y: (np.full_like(x, 0.3), np.full_like(x, 0.4))))
    assert lines.x.dtype == np.float32 and lines.speed.dtype == np.float32
    n_lines = np.isnan(lines.x).sum() + 1
    assert n_lines > 5 and len(lines.arrow_x) == n_lines
    steps = np.c_[np.diff(lines.x), np.diff(lines.y)]
    steps = steps[np.isfinite(steps).all(axis=1)]
    directions = steps / np.linalg.norm(steps, axis=1)[:, None]
    np.testing.assert_allclose(directions, np.tile([0.6, 0.8], (len(steps), 1)), atol=1e-4)
    finite = np.isfinite(lines.speed)
    np.testing.assert_array_equal(finite, np.isfinite(lines.x))
    np.testing.assert_allclose(lines.speed[finite], 0.5, rtol=1e-5)
    # plotly angle: 0 = up, clockwise; (0.6, 0.8) is atan2 = 53.13° → 36.87°
    np.testing.assert_allclose(lines.arrow_angle, np.degrees(np.arctan2(0.6, 0.8)), atol=1e-3)


def test_rotation_field_arrows_are_tangent():
    lines = streamlines(field(lambda x, y: (-y, x)))  # counter-clockwise rotation
    assert len(lines.arrow_x) > 5
    # tangent (dx, dy) = (-y, x) at the anchor; plotly angle = 90° − atan2(dy, dx)
    expected = 90.0 - np.degrees(np.arctan2(lines.arrow_x, -lines.arrow_y))
    difference = (lines.arrow_angle - expected + 180.0) % 360.0 - 180.0
    assert np.abs(difference).max() < 1.0
    radius = np.hypot(lines.x, lines.y)
    finite = np.isfinite(radius)
    np.testing.assert_allclose(lines.speed[finite], radius[finite], rtol=0, atol=0.01)


def test_masked_grid_stops_lines_and_empty_grid_gives_no_lines():
    grid = field(lambda x, y: (np.ones_like(x), np.zeros_like(x)))
    grid.u[:, 20:] = np.nan
    lines = streamlines(grid, density=1.0)
    assert np.nanmax(lines.x) <= grid.x[20] + 1e-6
    grid.u[:] = np.nan
    empty = streamlines(grid, density=1.0)
    assert empty.x.size == 0 and empty.arrow_angle.size == 0


def test_bad_shapes_are_explained():
    with pytest.raises(ValueError, match=r"\(cells, 2\)"):
        velocity_grid(np.zeros((10, 3)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="mode must be"):
        velocity_grid(np.zeros((10, 2)), np.zeros((10, 2)), mode="quiver")

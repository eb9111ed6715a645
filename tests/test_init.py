"""Data-dependent initialisation: the geometric median."""

from __future__ import annotations

import torch

from training.saes.init import geometric_median


def test_geometric_median_of_a_symmetric_cloud_is_its_centre():
    centre = torch.tensor([1.0, -2.0, 0.5])
    offsets = torch.randn(500, 3)
    points = torch.cat([centre + offsets, centre - offsets])
    torch.testing.assert_close(geometric_median(points), centre, rtol=0, atol=1e-4)


def test_geometric_median_resists_outliers_unlike_the_mean():
    bulk = torch.randn(1000, 4) * 0.1
    outliers = torch.full((50, 4), 100.0)
    points = torch.cat([bulk, outliers])
    median = geometric_median(points)
    assert median.norm().item() < 0.5
    assert points.mean(dim=0).norm().item() > 5
    assert median.dtype == points.dtype


def test_geometric_median_minimises_summed_distance():
    points = torch.rand(300, 5) ** 3
    median = geometric_median(points)
    cost = (points - median).norm(dim=1).sum()
    for _ in range(20):
        nudged = median + 0.01 * torch.randn(5)
        assert (points - nudged).norm(dim=1).sum() >= cost - 1e-4
    assert cost < (points - points.mean(dim=0)).norm(dim=1).sum()

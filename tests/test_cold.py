"""Cold diffusion (Report D Chapter 2; Bansal et al. 2022): the row/column-averaging degradation,
Algorithms 1 and 2, and the prior on fully degraded images."""

import itertools

import pytest
import torch

from diffusion_edu import load_embedded_mnist
from diffusion_edu.cold import RowColumnAveraging, cold_sample, fit_degraded_prior, line_order

CONFIGS = [
    (a, o, g) for a in ("rows", "columns", "both") for o, g in (("random", 1), ("outside-in", 4), ("inside-out", 1))
]


def _imgs(n=3, c=1, size=28, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


class Oracle(torch.nn.Module):
    """R(x_s, s) = the true x0 plus a fixed error; records what it was asked."""

    def __init__(self, x0, error=None):
        super().__init__()
        self.x0, self.error, self.calls = x0, torch.zeros_like(x0) if error is None else error, []

    def forward(self, x, t, y=None):
        self.calls.append((x.clone(), t.clone()))
        return self.x0 + self.error


def test_orders_follow_report_d():
    """Report D lists outside-in as [1, 28, 2, 27, 3, 26, ...] and inside-out as [14, 15, 13, 16, 12, 17, ...]
    (1-based); each order must visit every line once; random orders are seeded and reproducible."""
    assert line_order("outside-in", 28)[:6] == [1, 28, 2, 27, 3, 26]
    assert line_order("inside-out", 28)[:6] == [14, 15, 13, 16, 12, 17] and line_order("inside-out", 28)[-1] == 28
    assert line_order("outside-in", 7) == [1, 7, 2, 6, 3, 5, 4] and line_order("inside-out", 7) == [4, 5, 3, 6, 2, 7, 1]
    for order in ("random", "outside-in", "inside-out"):
        assert sorted(line_order(order, 28)) == list(range(1, 29))
    assert line_order("random", 28, seed=3) == line_order("random", 28, seed=3) != line_order("random", 28, seed=4)
    assert RowColumnAveraging("rows", "random", 4).T == 7 and RowColumnAveraging("both", "random", 1).T == 56


def _report_d_naive(x, t, axis, order):
    """Report D's pseudo-code, loop by loop: z_t[:, j] = 1/28 sum_k x[k, j] for the first t columns j."""
    z = x.clone()
    for j in order[:t]:
        if axis == "columns":
            z[:, :, :, j - 1] = x[:, :, :, j - 1].mean(dim=-1, keepdim=True)
        else:
            z[:, :, j - 1, :] = x[:, :, j - 1, :].mean(dim=-1, keepdim=True)
    return z


@pytest.mark.parametrize("axis", ["rows", "columns"])
@pytest.mark.parametrize("order", ["random", "outside-in", "inside-out"])
def test_degradation_is_report_d_pseudo_code(axis, order):
    """D(x, t) must be exactly Report D's definition: the first t lines of the order replaced by their
    own mean, the others untouched (checked against a line-by-line loop)."""
    D, x = RowColumnAveraging(axis, order, seed=5), _imgs()
    for t in (0, 1, 2, 13, 27, 28):
        assert torch.allclose(D.degrade(x, t), _report_d_naive(x, t, axis, D.order), atol=1e-12)


def test_groups_of_4_average_blocks():
    """With groups of 4 (Report D's first version: 7 steps) each step replaces a 4-row block by one value,
    its mean, so D(x, T) holds 7 distinct rows."""
    D, x = RowColumnAveraging("rows", "outside-in", group=4), _imgs(1)
    d1 = D.degrade(x, 1)[0, 0]  # block 1 = rows 1..4
    assert torch.allclose(d1[:4], x[0, 0, :4].mean().expand(4, 28)) and torch.equal(d1[4:], x[0, 0, 4:])
    assert D.degrade(x, 7)[0, 0].unique().numel() == 7


@pytest.mark.parametrize("axis,order,group", CONFIGS)
def test_d_of_0_is_identity_and_projection_properties(axis, order, group):
    """Bansal et al. require D(x, 0) = x. Each D(., t) is an orthogonal projection: it keeps each image's
    mean, and the removed part x - D(x, t) is orthogonal to every degraded image D(y, t)."""
    D, x, y = RowColumnAveraging(axis, order, group), _imgs(2, c=2), _imgs(2, c=2, seed=1)
    assert torch.equal(D.degrade(x, 0), x)
    for t in range(D.T + 1):
        d = D.degrade(x, t)
        assert torch.allclose(d.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=1e-12)
        assert abs(((x - d) * D.degrade(y, t)).sum().item()) < 1e-9


@pytest.mark.parametrize("axis,order,group", CONFIGS)
def test_degradation_is_idempotent_in_the_right_sense(axis, order, group):
    """Degrading an already degraded image changes nothing new: D(D(x, t), t) = D(x, t), and more
    generally D(D(x, s), t) = D(x, max(s, t)) for the same order. Sampling's Algorithm 2 relies on it."""
    D, x = RowColumnAveraging(axis, order, group), _imgs(2)
    ts = range(D.T + 1) if D.T <= 28 else [0, 1, 2, 3, 10, 27, 40, 55, 56]
    for s, t in itertools.product(ts, ts):
        assert torch.allclose(D.degrade(D.degrade(x, s), t), D.degrade(x, max(s, t)), atol=1e-12)


def test_both_axes_alternate_rows_and_columns():
    """axis='both': step 1 averages a row, step 2 a column; a row and a column share a pixel, so from
    then on their union is one constant (its mean), and D(x, T) is the image's mean everywhere."""
    D, x = RowColumnAveraging("both", "outside-in"), _imgs(1)
    one = D.degrade(x, 1)[0, 0]
    assert torch.allclose(one[0], x[0, 0, 0].mean().expand(28)) and torch.equal(one[1:], x[0, 0, 1:])
    two = D.degrade(x, 2)[0, 0]
    cross = torch.cat([x[0, 0, 0, :], x[0, 0, 1:, 0]])  # row 1 and column 1: 55 pixels
    assert torch.allclose(two[0, :], cross.mean().expand(28)) and torch.allclose(two[1:, 0], cross.mean().expand(27))
    assert torch.equal(two[1:, 1:], x[0, 0, 1:, 1:])
    assert torch.allclose(D.degrade(x, D.T), x.mean().expand(1, 1, 28, 28))


def test_batch_of_different_t():
    """The training engine degrades a batch with one t per image: each must match its own call."""
    D, x = RowColumnAveraging("both", "random", 4), _imgs(4)
    t = torch.tensor([0, 1, 5, 14])
    got = D.degrade(x, t)
    for i in range(4):
        assert torch.equal(got[i : i + 1], D.degrade(x[i : i + 1], int(t[i])))


@pytest.mark.parametrize("axis,order,group", CONFIGS)
def test_coordinates_describe_the_fully_degraded_image(axis, order, group):
    D, x = RowColumnAveraging(axis, order, group), _imgs(2, c=3)
    z = D.degraded_coords(x)
    assert z.shape == (2, 3 if axis == "both" else 3 * 28 // group)
    assert torch.allclose(D.from_coords(z, 3), D.degrade(x, D.T), atol=1e-12)
    assert RowColumnAveraging(**D.config()).order == D.order


# ------------------------------------------------------------------------------------ sampling


@pytest.mark.parametrize("algorithm", [1, 2])
@pytest.mark.parametrize("axis,order,group", CONFIGS)
def test_oracle_restoration_recovers_x0_exactly(algorithm, axis, order, group):
    """With R returning the true x0, both of Bansal et al.'s algorithms must walk from D(x0, T) back to x0:
    Algorithm 1 gives D(x0, 0), Algorithm 2's D terms telescope to the same."""
    D, x0 = RowColumnAveraging(axis, order, group), _imgs(2)
    out = cold_sample(Oracle(x0), D, D.degrade(x0, D.T), algorithm=algorithm)
    assert torch.allclose(out, x0, atol=1e-10)


def test_algorithm_2_forgives_errors_that_algorithm_1_keeps():
    """Bansal et al.'s point, checked exactly: if R is off by a fixed error e, Algorithm 1 returns x0 + e,
    while Algorithm 2 returns x0 + e - D(e, T): it cancels whatever part of the error D erases. A constant
    offset is erased completely, so there Algorithm 2 stays exact."""
    D, x0 = RowColumnAveraging("rows", "random"), _imgs(2)
    x_T = D.degrade(x0, D.T)
    e = 0.3 * _imgs(2, seed=9)
    a1 = cold_sample(Oracle(x0, e), D, x_T, algorithm=1)
    a2 = cold_sample(Oracle(x0, e), D, x_T, algorithm=2)
    assert torch.allclose(a1, x0 + e, atol=1e-10)
    assert torch.allclose(a2, x0 + e - D.degrade(e, D.T), atol=1e-10)
    assert (a2 - x0).norm() < 0.99 * (a1 - x0).norm()
    const = torch.full_like(x0, 0.25)
    assert torch.allclose(cold_sample(Oracle(x0, const), D, x_T, algorithm=2), x0, atol=1e-10)
    assert torch.allclose(cold_sample(Oracle(x0, const), D, x_T, algorithm=1), x0 + 0.25, atol=1e-10)


def test_restoration_network_sees_the_current_image_and_step():
    """Report D's pseudo-code calls R(z_T, T) at every step (an erratum). R must be asked R(x_s, s) for
    s = T, ..., 1 on the current image: check the calls against the recorded trajectory."""
    D, x0 = RowColumnAveraging("columns", "outside-in", 4), _imgs(2)
    R = Oracle(x0, 0.1 * _imgs(2, seed=2))
    out, traj = cold_sample(R, D, D.degrade(x0, D.T), algorithm=2, trajectory_every=1)
    assert [int(t[0]) for _, t in R.calls] == list(range(7, 0, -1))
    assert traj.t == list(range(7, -1, -1)) and traj.xt.shape == (8, 2, 1, 28, 28)
    for (x, _), xs in zip(R.calls, traj.xt[:-1]):
        assert torch.equal(x, xs)
    assert not torch.equal(R.calls[-1][0], R.calls[0][0])  # not z_T again
    assert torch.equal(traj.xt[-1], out)
    _, sparse = cold_sample(R, D, D.degrade(x0, D.T), trajectory_every=3)
    assert sparse.t == [7, 4, 1, 0]


# ------------------------------------------------------------------------------------ prior


def test_one_component_prior_is_the_gaussian_fit_and_samples_are_fully_degraded():
    """With one component the prior is the maximum-likelihood Gaussian of the row means; its draws are
    fully degraded images (D(x_T, T) = x_T) whose row means have that mean and covariance."""
    D = RowColumnAveraging("rows", "random")
    digits, _ = load_embedded_mnist("heldout").batch(range(300))
    prior = fit_degraded_prior(D, digits)
    z = D.degraded_coords(digits).double()
    assert torch.allclose(prior.means[0], z.mean(0))
    assert torch.allclose(prior.covs[0], torch.cov(z.T, correction=0) + 1e-6 * torch.eye(28), atol=1e-12)
    x_T = prior.sample(4000, generator=torch.Generator().manual_seed(0))
    assert x_T.shape == (4000, 1, 28, 28) and x_T.dtype == torch.float32
    assert torch.allclose(D.degrade(x_T, D.T), x_T, atol=1e-6)
    zs = D.degraded_coords(x_T).double()
    assert (zs.mean(0) - z.mean(0)).abs().max() < 0.03
    assert (zs.std(0) - z.std(0)).abs().max() < 0.03


def test_mixture_prior_finds_two_clusters():
    """EM must find two well separated groups of fully degraded images, with their weights and spreads."""
    D = RowColumnAveraging("both", "random", size=4)
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(300, generator=g) * 0.05 - 0.5, torch.randn(100, generator=g) * 0.05 + 0.4])
    images = z.reshape(-1, 1, 1, 1).expand(-1, 1, 4, 4) + 0.01 * torch.randn(400, 1, 4, 4, generator=g)
    prior = fit_degraded_prior(D, images, n_components=2, generator=torch.Generator().manual_seed(1))
    order = prior.means[:, 0].argsort()
    assert torch.allclose(prior.means[order, 0], torch.tensor([-0.5, 0.4], dtype=torch.float64), atol=0.02)
    assert torch.allclose(prior.weights[order], torch.tensor([0.75, 0.25], dtype=torch.float64), atol=0.02)
    sd = prior.covs[order, 0, 0].sqrt()  # the clusters' own sample spreads (about 0.05 each)
    assert torch.allclose(sd, torch.stack([z[:300].std(), z[300:].std()]).double(), rtol=0.05)


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(axis="diagonal"), "unknown axis 'diagonal'"),
        (dict(order="spiral"), "unknown order 'spiral'"),
        (dict(group=5), "group=5 must divide size=28"),
        (dict(group=0), "group must be an int >= 1"),
        (dict(size=0), "size must be an int >= 1"),
    ],
)
def test_degradation_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RowColumnAveraging(**kwargs)


def test_cold_functions_reject_bad_input():
    D, x0 = RowColumnAveraging("rows", "random", 4), _imgs(2)
    with pytest.raises(ValueError, match="t must lie in 0..T=7"):
        D.degrade(x0, 8)
    with pytest.raises(ValueError, match="t must lie in 0..T=7"):
        D.degrade(x0, torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="x0 must be \\(B, C, 28, 28\\) images"):
        D.degrade(_imgs(2, size=32), 1)
    with pytest.raises(ValueError, match="algorithm must be 1 \\(naive\\) or 2"):
        cold_sample(Oracle(x0), D, x0, algorithm=3)
    with pytest.raises(ValueError, match="trajectory_every must be an int >= 1"):
        cold_sample(Oracle(x0), D, x0, trajectory_every=0)
    eps_model = Oracle(x0)
    eps_model.parameterization = "eps"
    with pytest.raises(ValueError, match="the restoration network must predict x0"):
        cold_sample(eps_model, D, x0)
    with pytest.raises(ValueError, match="n_components must be an int in 1..2"):
        fit_degraded_prior(D, x0, n_components=3)
    with pytest.raises(ValueError, match="n_components must be an int in 1..2"):
        fit_degraded_prior(D, x0, n_components=0)
    with pytest.raises(ValueError, match="n \\(the number of images\\) must be an int >= 1"):
        fit_degraded_prior(D, x0).sample(0)

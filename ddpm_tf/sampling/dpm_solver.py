"""DPM-Solver++ (Lu et al. 2022) for a discrete DDPM: the method and its float64 coefficient tables.

DPM-Solver++ integrates the probability-flow ODE written in the half log-SNR
lambda_t = log(alpha_t / sigma_t) (alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t)) with the
network's data prediction x_theta. Over one step s -> t, with h = lambda_t - lambda_s, the exact
solution is x_t = (sigma_t / sigma_s) x_s + sigma_t * integral of e^lambda x_theta d lambda, and
the solvers approximate x_theta on the step:

- first order (x_theta constant, = DDIM with eta = 0):
  x_t = (sigma_t / sigma_s) x_s - alpha_t (e^-h - 1) x_theta(x_s, s);
- second order, multistep ("2M"): with the previous step's prediction x_theta(x_r, r) and
  r_ratio = h_last / h (h_last = lambda_s - lambda_r),
  D = (1 + 1 / (2 r_ratio)) x_theta(x_s, s) - 1 / (2 r_ratio) x_theta(x_r, r), and D replaces
  x_theta in the first-order formula.

The steps here run over a (respaced) discrete process from index T'-1 down to 0, and the last step
goes from index 0 to the data (abar = 1, sigma = 0): there h is infinite and the update is
x_theta itself, so that step is first order, as is the first (no history yet, wherever the loop
starts) and, with fewer than
`LOWER_ORDER_FINAL_BELOW` steps, the step onto index 0. So every step is

    x_prev = ratio[t] x_t + weight[t] (x0 + correction[t] (x0 - x0_last))

with x0 = x_theta(x_t, t), and the three tables below hold everything that depends on the schedule.
The solver follows the probability-flow ODE, so a learned variance is ignored (the mean part of the
output is used); a bare step count is spaced evenly in log-SNR, the solver's natural grid.
"""

from __future__ import annotations

import numpy as np

from ddpm_tf.sampling.method import MultistepSolver, Predict
from ddpm_tf.spacing import half_log_snr

__all__ = ["LOWER_ORDER_FINAL_BELOW", "DPMSolverPlusPlus", "multistep_tables"]

LOWER_ORDER_FINAL_BELOW = 15
"""With fewer steps than this, the last two steps are first order (the paper's advice for few-step
sampling: there the steps near the data are long, and extrapolating x_theta over them hurts)."""

ORDERS = (1, 2)


def multistep_tables(
    alphas_cumprod: np.ndarray, order: int, start: int | None = None
) -> dict[str, np.ndarray]:
    """The coefficients (ratio, weight, correction), each float64 [T'], of the step from index t.

    `alphas_cumprod` are those of the process being sampled (respaced or not); `order` is 1 or 2
    (`DPMSolverPlusPlus.check` holds the spec to that); `start` the index of the first step
    (default T'-1), which has no earlier prediction to extrapolate from.
    """
    ab = np.asarray(alphas_cumprod, np.float64)
    ab_prev = np.concatenate([[1.0], ab[:-1]])  # the step from index t lands on t - 1; 0 -> data
    lam, lam_prev = half_log_snr(ab), half_log_snr(ab_prev)
    h = lam_prev - lam  # > 0; +inf on the last step
    sigma, sigma_prev = np.sqrt(1.0 - ab), np.sqrt(1.0 - ab_prev)
    ratio = sigma_prev / sigma
    weight = -np.sqrt(ab_prev) * np.expm1(-h)  # alpha_prev (1 - e^-h), exact as h -> 0 or inf
    correction = np.zeros_like(ab)
    if order == 2 and ab.size > 2:
        h_last = lam[:-1] - lam[1:]  # for t < T'-1: lambda_t - lambda_{t+1}, the step just taken
        inner = slice(1, ab.size - 1)  # not the last step (t = 0) nor the first (t = T'-1)
        correction[inner] = h[inner] / (2.0 * h_last[1:])
        if ab.size < LOWER_ORDER_FINAL_BELOW:
            correction[1] = 0.0  # the step onto the last grid point is first order too
        correction[ab.size - 1 if start is None else start] = 0.0
    return {"ratio": ratio, "weight": weight, "correction": correction}


class DPMSolverPlusPlus(MultistepSolver):
    name = "dpm_solver++"
    label = "DPM-Solver++"
    summary = "DPM-Solver++ (Lu et al. 2022), multistep on the data prediction, order 1 or 2"
    orders = ORDERS
    make_tables = staticmethod(multistep_tables)

    @property
    def memory(self) -> int:
        return 1  # the previous step's x_0 prediction

    def step(self, predict: Predict, x_t, t, noise, memory=()) -> tuple:
        process, tables = self.process, self.tables
        x0 = predict(x_t, t)["pred_xstart"]
        (x0_last,) = memory
        data = x0 + process.gather(tables["correction"], t, x_t) * (x0 - x0_last)
        return process.combine(t, tables["ratio"], x_t, tables["weight"], data), x0, (x0,)

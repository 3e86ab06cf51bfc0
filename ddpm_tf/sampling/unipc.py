"""UniPC (Zhao et al. 2023), the B(h) = e^h - 1 ("bh2") variant on the data prediction.

UniPC solves the same probability-flow ODE as DPM-Solver++, in the half log-SNR lambda, with a
multistep predictor (UniP) and a corrector (UniC) that costs no network call: the x_0 prediction
m_t that the next step needs anyway, evaluated at the predicted x_t, is used once more to correct
x_t before the step leaves it. With alpha = sqrt(abar), sigma = sqrt(1 - abar), a step s -> t of
h = lambda_t - lambda_s and phi = e^-h - 1,

    base(s -> t)  = (sigma_t / sigma_s) x_s - alpha_t phi m_s
    UniP order p: x_t = base - alpha_t phi sum_k rho_k (m_{s_k} - m_s) / r_k,  k < p
    UniC order p: x_t^c = base - alpha_t phi (sum_k rho_k (m_{s_k} - m_s) / r_k + rho_p (m_t - m_s))

with s_k the k-th grid point before s, r_k = (lambda_{s_k} - lambda_s) / h, and the rho's the
solution of the order conditions sum_k rho_k r_k^(i-1) = b_i (b_i from the phi functions of -h;
rho = 1/2 for the predictor of order 2 and the corrector of order 1, as the paper sets them). The
predictor of order 2 is DPM-Solver++(2M)'s step. A step's order is the spec's `solver_order`,
lowered at the start (the history is short) and on the last two steps ("lower order final"); the
corrector of x_t has the order of the predictor that made x_t, and x_T itself is not corrected.

Every update is linear in (x_t, the corrected x of the previous step, m_t, m_{t+1}, ...), so all of
it is two float64 tables of coefficients per step: `unipc_tables`. The last step, onto the data
(sigma = 0), returns m_0 as every sampler here does.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from ddpm_tf.sampling.method import MultistepSolver, Predict
from ddpm_tf.spacing import half_log_snr

__all__ = ["ORDERS", "UniPC", "unipc_tables"]

ORDERS = (1, 2, 3)


def _order_conditions(h: float, order: int) -> np.ndarray:
    """b_1 .. b_order of the bh2 variant for a step of half log-SNR length h > 0 (finite)."""
    hh = -h
    phi = math.expm1(hh)
    phi_k, factorial, b = phi / hh - 1.0, 1.0, []
    for i in range(1, order + 1):
        b.append(phi_k * factorial / phi)
        factorial *= i + 1
        phi_k = phi_k / hh - 1.0 / factorial
    return np.array(b)


def _rhos(ratios: list[float], h: float, order: int, corrector: bool) -> np.ndarray:
    """The weights rho_1 .. of the differences, for the ratios r_k of the earlier points."""
    if order == 1:
        return np.array([0.5]) if corrector else np.zeros(0)
    if order == 2 and not corrector:
        return np.array([0.5])
    nodes = np.array([*ratios, 1.0])
    system = np.stack([nodes ** (i - 1) for i in range(1, order + 1)])
    b = _order_conditions(h, order)
    if corrector:
        return np.linalg.solve(system, b)
    return np.linalg.solve(system[:-1, :-1], b[:-1])


def unipc_tables(
    alphas_cumprod: np.ndarray, order: int, start: int | None = None
) -> dict[str, np.ndarray]:
    """Float64 coefficient tables of the step from each process index t.

    Returns dict(predictor [T', 1 + order], corrector [T', 3 + order]): the predictor's x_{t-1} is
    predictor[t] . (x_t^c, m_t, m_{t+1}, ..., m_{t+order-1}) and the corrector's x_t^c is
    corrector[t] . (x_t, x_{t+1}^c, m_t, m_{t+1}, ..., m_{t+order}), with m_k the x_0 prediction at
    index k. `start` (default T'-1) is the first step's index: no history there.
    """
    ab = np.asarray(alphas_cumprod, np.float64)
    size = ab.size
    start = size - 1 if start is None else start
    lam, alpha, sigma = half_log_snr(ab), np.sqrt(ab), np.sqrt(1.0 - ab)
    predictor = np.zeros((size, 1 + order))
    corrector = np.zeros((size, 3 + order))

    def predictor_order(t: int) -> int:  # lowered at the start and on the last two steps
        return min(order, start - t + 1, t + 1)

    for t in range(start, -1, -1):
        p = predictor_order(t)
        if t == 0:  # onto the data: alpha = 1, sigma = 0, the x_0 prediction itself
            predictor[t, 1] = 1.0
        else:
            h = lam[t - 1] - lam[t]
            scale = -alpha[t - 1] * math.expm1(-h)  # -alpha_t phi = alpha_t (1 - e^-h)
            predictor[t, 0] = sigma[t - 1] / sigma[t]
            predictor[t, 1] = scale
            ratios = [(lam[t + k] - lam[t]) / h for k in range(1, p)]
            for k, (rho, r) in enumerate(zip(_rhos(ratios, h, p, False), ratios, strict=True), 1):
                predictor[t, 1 + k] += scale * rho / r
                predictor[t, 1] -= scale * rho / r
        if t == start:
            corrector[t, 0] = 1.0  # x_T (or the given start) is not corrected
            continue
        c, s = predictor_order(t + 1), t + 1  # the order of the predictor that made x_t
        h = lam[t] - lam[s]
        scale = -alpha[t] * math.expm1(-h)
        corrector[t, 1] = sigma[t] / sigma[s]
        corrector[t, 3] = scale  # m_s = m_{t+1}
        ratios = [(lam[s + k] - lam[s]) / h for k in range(1, c)]
        rhos = _rhos(ratios, h, c, True)
        for k, (rho, r) in enumerate(zip(rhos[:-1], ratios, strict=True), 1):
            corrector[t, 3 + k] += scale * rho / r
            corrector[t, 3] -= scale * rho / r
        corrector[t, 2] += scale * rhos[-1]  # rho_c (m_t - m_s)
        corrector[t, 3] -= scale * rhos[-1]
    return {"predictor": predictor, "corrector": corrector}


class UniPC(MultistepSolver):
    name = "unipc"
    label = "UniPC"
    summary = "UniPC (Zhao et al. 2023), bh2: multistep predictor with a free corrector, order 1-3"
    orders = ORDERS
    make_tables = staticmethod(unipc_tables)

    @property
    def memory(self) -> int:
        return 1 + self.spec.solver_order  # x_{t+1}^c and m_{t+1} .. m_{t+order}

    def _dot(self, table: np.ndarray, t, terms) -> tf.Tensor:
        gather = self.process.gather
        return tf.add_n([gather(table[:, i], t, term) * term for i, term in enumerate(terms)])

    def step(self, predict: Predict, x_t, t, noise, memory=()) -> tuple:
        x_last, *history = memory  # history: m_{t+1} .. m_{t+order}
        m_t = predict(x_t, t)["pred_xstart"]
        corrected = self._dot(self.tables["corrector"], t, (x_t, x_last, m_t, *history))
        models = (m_t, *history[:-1])
        x_prev = self._dot(self.tables["predictor"], t, (corrected, *models))
        return x_prev, m_t, (corrected, *models)

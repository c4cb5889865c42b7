"""Plain NumPy implementations of each paper's formula, for the loss tests.

Written from the papers, not from tf_distill: float64, explicit loops over
pairs and triplets where the paper sums over them, probabilities computed
directly. Each returns the per-example values tf_distill documents (rows whose
batch mean is the paper's loss).
"""

import numpy as np


def softmax(logits, temperature=1.0):
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def kl(p, q):
    """KL(p ‖ q) over the last axis; 0 · log 0 counts as 0."""
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return terms.sum(axis=-1)


def masked_mean(values, mask=None):
    """Per-example mean over every axis but the first, counting `mask`."""
    values = np.asarray(values, np.float64)
    flat = values.reshape(values.shape[0], -1)
    if mask is None:
        return flat.mean(axis=1)
    weights = np.broadcast_to(np.asarray(mask, np.float64), values.shape)
    weights = weights.reshape(values.shape[0], -1)
    count = weights.sum(axis=1)
    total = (flat * weights).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


# --- Soft labels (Hinton et al. 2015; MiniLLM; GKD; Sun et al. 2024) -------


def standardize(logits, epsilon=1e-7, ddof=1):
    """Sun et al. 2024, as their code's `normalize`: `torch.std` is the sample
    standard deviation (ddof = 1) by default."""
    z = np.asarray(logits, np.float64)
    std = z.std(axis=-1, ddof=ddof, keepdims=True)
    return (z - z.mean(axis=-1, keepdims=True)) / (std + epsilon)


def kd(teacher, student, temperature, mask=None, standardized=False, ddof=1):
    if standardized:
        teacher, student = standardize(teacher, ddof=ddof), standardize(student, ddof=ddof)
    p_t = softmax(teacher, temperature)
    p_s = softmax(student, temperature)
    return masked_mean(temperature**2 * kl(p_t, p_s), mask)


def reverse_kd(teacher, student, temperature, mask=None):
    p_t = softmax(teacher, temperature)
    p_s = softmax(student, temperature)
    return masked_mean(temperature**2 * kl(p_s, p_t), mask)


def jsd(teacher, student, temperature, beta=0.5, mask=None):
    p_t = softmax(teacher, temperature)
    p_s = softmax(student, temperature)
    m = beta * p_t + (1 - beta) * p_s
    values = beta * kl(p_t, m) + (1 - beta) * kl(p_s, m)
    return masked_mean(temperature**2 * values, mask)


# --- Features ---------------------------------------------------------------


def fitnets(teacher, student):
    """Romero et al. 2015: ½‖u_h − r(v_g)‖², divided by D/2 (a mean)."""
    t = np.asarray(teacher, np.float64).reshape(len(teacher), -1)
    s = np.asarray(student, np.float64).reshape(len(student), -1)
    half_sum = 0.5 * ((t - s) ** 2).sum(axis=1)
    return half_sum / (t.shape[1] / 2)


def attention(teacher, student, power=2.0):
    """Zagoruyko & Komodakis 2017, with the 2-norm of the difference."""
    values = []
    for a_t, a_s in zip(teacher, student):
        q_t = (np.abs(np.asarray(a_t, np.float64)) ** power).sum(axis=-1).ravel()
        q_s = (np.abs(np.asarray(a_s, np.float64)) ** power).sum(axis=-1).ravel()
        values.append(np.linalg.norm(q_s / np.linalg.norm(q_s) - q_t / np.linalg.norm(q_t)))
    return np.array(values)


# --- Relations --------------------------------------------------------------


def _rows(features):
    features = np.asarray(features, np.float64)
    return features.reshape(features.shape[0], -1)


def huber(x):
    x = abs(x)
    return 0.5 * x * x if x < 1 else x - 0.5


def rkd_distance(teacher, student):
    """Park et al. 2019, distance-wise, averaged over all b² ordered pairs."""
    t, s = _rows(teacher), _rows(student)
    b = len(t)

    def psi(f):
        d = np.array([[np.linalg.norm(f[i] - f[j]) for j in range(b)] for i in range(b)])
        mu = sum(d[i, j] for i in range(b) for j in range(b) if i != j) / (b * (b - 1))
        return d / mu

    d_t, d_s = psi(t), psi(s)
    return np.array([sum(huber(d_s[i, j] - d_t[i, j]) for j in range(b)) / b for i in range(b)])


def rkd_angle(teacher, student):
    """Park et al. 2019, angle-wise, averaged over all b³ triplets (vertex i)."""
    t, s = _rows(teacher), _rows(student)
    b = len(t)

    def psi(f, i, j, k):
        u, v = f[j] - f[i], f[k] - f[i]
        if np.linalg.norm(u) == 0 or np.linalg.norm(v) == 0:
            return 0.0
        return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))

    return np.array(
        [
            sum(huber(psi(s, i, j, k) - psi(t, i, j, k)) for j in range(b) for k in range(b)) / b**2
            for i in range(b)
        ]
    )


def similarity_preserving(teacher, student):
    """Tung & Mori 2019: ‖G̃_t − G̃_s‖_F² / b², split into rows."""
    t, s = _rows(teacher), _rows(student)
    b = len(t)

    def g(f):
        gram = f @ f.T
        return gram / np.linalg.norm(gram, axis=1, keepdims=True)

    difference = g(t) - g(s)
    total = (difference**2).sum() / b**2
    rows = (difference**2).sum(axis=1) / b
    assert np.isclose(rows.mean(), total)
    return rows


def pkt(teacher, student):
    """Passalis & Tefas 2018: Σ_{j≠i} p_{j|i} log(p_{j|i} / q_{j|i}) per i."""
    t, s = _rows(teacher), _rows(student)
    b = len(t)

    def kernel(a, c):
        return 0.5 * (a @ c / (np.linalg.norm(a) * np.linalg.norm(c)) + 1.0)

    def conditional(f, i):
        k = {j: kernel(f[i], f[j]) for j in range(b) if j != i}
        total = sum(k.values())
        return {j: v / total for j, v in k.items()}

    values = []
    for i in range(b):
        p, q = conditional(t, i), conditional(s, i)
        values.append(sum(p[j] * np.log(p[j] / q[j]) for j in p))
    return np.array(values)


# --- Logit methods ----------------------------------------------------------


def dkd(teacher, student, labels, alpha, beta, temperature):
    """Zhao et al. 2022: T²(α·TCKD + β·NCKD), per example."""
    p_t = softmax(teacher, temperature)
    p_s = softmax(student, temperature)
    values = []
    for i, g in enumerate(labels):
        b_t = np.array([p_t[i, g], 1 - p_t[i, g]])
        b_s = np.array([p_s[i, g], 1 - p_s[i, g]])
        others = [k for k in range(p_t.shape[1]) if k != g]
        hat_t = p_t[i, others] / p_t[i, others].sum()
        hat_s = p_s[i, others] / p_s[i, others].sum()
        values.append(temperature**2 * (alpha * kl(b_t, b_s) + beta * kl(hat_t, hat_s)))
    return np.array(values)


def pearson(u, v, constant_tolerance=1e-5):
    """Pearson's ρ, defined as 0 when `u` or `v` is constant.

    A vector is constant when its standard deviation is at most
    `constant_tolerance` times its largest magnitude (tf_distill's DIST
    convention: constant up to float32 rounding counts as constant).
    """
    u = np.asarray(u, np.float64)
    v = np.asarray(v, np.float64)
    for vector in (u, v):
        if np.std(vector) <= constant_tolerance * np.max(np.abs(vector)):
            return 0.0
    return np.corrcoef(u, v)[0, 1]


def dist(teacher, student, beta, gamma, temperature):
    """Huang et al. 2022; the batch-level intra term on every row."""
    y_t = softmax(teacher, temperature)
    y_s = softmax(student, temperature)
    b, c = y_t.shape
    inter = np.array([1 - pearson(y_s[i], y_t[i]) for i in range(b)])
    intra = np.mean([1 - pearson(y_s[:, k], y_t[:, k]) for k in range(c)])
    return temperature**2 * (beta * inter + gamma * intra)


NCE_EPSILON = 1e-7  # RepDistiller's `eps` in CRD's NCE loss


def normalize(x):
    """Rows scaled to unit L2 norm."""
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def crd(teacher, student, teacher_bank, student_bank, contrast_idx, temperature,
        num_examples, z_teacher=None, z_student=None):
    """CRD (Tian et al. 2020) as RepDistiller's ContrastMemory.forward + CRDLoss.

    `contrast_idx`: `[batch, 1 + K]` bank rows, the positive first. `Z` is
    estimated from these scores, as on RepDistiller's first batch, unless given.

    Returns the per-example losses (their mean is RepDistiller's loss) and
    the normalizers used.
    """
    # out_v1: the student (v1) against the teacher's memory; out_v2: the other way.
    out_v1 = np.exp(np.einsum("bkd,bd->bk", teacher_bank[contrast_idx], student) / temperature)
    out_v2 = np.exp(np.einsum("bkd,bd->bk", student_bank[contrast_idx], teacher) / temperature)
    if z_student is None:
        z_student = out_v1.mean() * num_examples
    if z_teacher is None:
        z_teacher = out_v2.mean() * num_examples

    def contrast_loss(x):  # ContrastLoss, one row per example
        m = x.shape[1] - 1
        pn = 1.0 / num_examples
        log_d1 = np.log(x[:, 0] / (x[:, 0] + m * pn + NCE_EPSILON))
        log_d0 = np.log((m * pn) / (x[:, 1:] + m * pn + NCE_EPSILON))
        return -(log_d1 + log_d0.sum(axis=1))

    rows = contrast_loss(out_v1 / z_student) + contrast_loss(out_v2 / z_teacher)
    return rows, z_teacher, z_student


def crd_negative_pools(labels, num_classes):
    """RepDistiller's `CIFAR100InstanceSample` (mode `exact`): `cls_negative[c]`,
    the indices of the examples of every class but `c`, from which each
    example of class `c` draws its negatives."""
    cls_positive = [[] for _ in range(num_classes)]
    for i, label in enumerate(labels):
        cls_positive[label].append(i)
    cls_negative = [[] for _ in range(num_classes)]
    for i in range(num_classes):
        for j in range(num_classes):
            if j != i:
                cls_negative[i].extend(cls_positive[j])
    return [np.asarray(sorted(pool)) for pool in cls_negative]


def uld(teacher, student, temperature=1.0, mask=None):
    """Universal Logit Distillation (Boizard et al. 2024): at each position,
    both probability vectors sorted in decreasing order, the shorter padded
    with zeros, and the L1 distance between them; averaged over `mask`."""
    p = np.sort(softmax(teacher, temperature), axis=-1)[..., ::-1]
    q = np.sort(softmax(student, temperature), axis=-1)[..., ::-1]
    size = max(p.shape[-1], q.shape[-1])
    pad = [(0, 0)] * (p.ndim - 1)
    p = np.pad(p, pad + [(0, size - p.shape[-1])])
    q = np.pad(q, pad + [(0, size - q.shape[-1])])
    return masked_mean(np.abs(p - q).sum(axis=-1), mask)

import math

import numpy as np
import pytest

from tf_distill.optimizers import OPTIMIZERS
from tf_distill.optimizers import learning_rate_schedule
from tf_distill.optimizers import make_optimizer


def test_constant_schedule_is_the_rate_itself():
    assert learning_rate_schedule(0.01, "constant", total_steps=100) == 0.01


def test_cosine_warms_up_linearly_then_decays_to_zero():
    rate = learning_rate_schedule(0.1, "cosine", total_steps=110, warmup_steps=10)
    values = [float(rate(step)) for step in (0, 5, 10, 60, 110)]
    # Warm-up 0 -> 0.1 over 10 steps, then 0.1·½(1 + cos(π·t/100)) over 100.
    expected = [0.0, 0.05, 0.1, 0.1 * 0.5 * (1 + math.cos(math.pi * 0.5)), 0.0]
    np.testing.assert_allclose(values, expected, atol=1e-6)


def test_cosine_without_warm_up_starts_at_the_rate():
    rate = learning_rate_schedule(0.1, "cosine", total_steps=100)
    np.testing.assert_allclose([float(rate(0)), float(rate(50)), float(rate(100))],
                               [0.1, 0.05, 0.0], atol=1e-6)


def test_schedule_errors():
    with pytest.raises(ValueError, match=r"Expected one of \['constant', 'cosine'\]"):
        learning_rate_schedule(0.1, "step")
    with pytest.raises(ValueError, match="needs `total_steps` >= 1"):
        learning_rate_schedule(0.1, "cosine")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_weight_decay_and_clipnorm_reach_the_optimizer(name):
    optimizer = make_optimizer(name, 0.01, weight_decay=0.05, clipnorm=2.0)
    assert optimizer.weight_decay == pytest.approx(0.05)
    assert optimizer.clipnorm == pytest.approx(2.0)
    plain = make_optimizer(name, 0.01)
    assert plain.clipnorm is None


def test_a_schedule_reaches_the_optimizer():
    rate = learning_rate_schedule(0.1, "cosine", total_steps=10, warmup_steps=2)
    optimizer = make_optimizer("adam", rate)
    assert float(optimizer.learning_rate) == pytest.approx(0.0)  # step 0: warm-up start


def test_options_with_a_factory_are_refused():
    with pytest.raises(ValueError, match="a factory makes its own"):
        make_optimizer(lambda rate: None, 0.01, clipnorm=1.0)

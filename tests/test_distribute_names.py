import pytest
import tensorflow as tf

from ddpm_tf.distribute import STRATEGIES, make_strategy


def test_default_strategy_and_unknown_names():
    assert make_strategy("default") is tf.distribute.get_strategy()
    assert "tpu" in STRATEGIES
    with pytest.raises(ValueError, match="Unknown strategy 'mirror'"):
        make_strategy("mirror")

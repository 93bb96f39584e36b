"""torch_threads=auto: the cores the load leaves free, never fewer than 1 nor more than this process may use."""
import pytest

from vae_lab import threads as train
from vae_lab.errors import ConfigError
from vae_lab.validation import Rule


@pytest.mark.parametrize("load, cores, affinity, expected", [
    (0.1, 2, 2, 2),    # idle 2-core machine: both
    (1.2, 2, 2, 1),    # another process busy: one
    (2.5, 2, 2, 1),    # both busy: one, never zero
    (40.0, 64, 4, 4),  # a cluster job's 4 cores on a half-loaded node
    (62.0, 64, 4, 2),
])
def test_auto_threads_follow_the_load(monkeypatch, load, cores, affinity, expected):
    monkeypatch.setattr(train.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(train.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(train.os, "sched_getaffinity", lambda pid: set(range(affinity)), raising=False)
    assert train.torch_threads("auto") == expected


def test_explicit_threads_are_kept_and_bad_words_refused():
    assert train.torch_threads(3) == 3 and train.torch_threads(None) is None
    rule = Rule("torch_threads", int, 1, nullable=True, words=("auto",))
    rule.check("auto")
    with pytest.raises(ConfigError, match="or auto"):
        rule.check("many")

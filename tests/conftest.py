"""Shared fixtures: tiny worlds built once per session into a temporary cache; and the guard that keeps the
``ray`` marker true: a test (or a fixture it uses) that starts Ray in this process without ``@pytest.mark.ray``
fails, so ``pytest -m "not ray"`` stays the fast part of the suite."""

from __future__ import annotations

import pytest

from fedpse.config import load_config

TINY_WORLD = [
    "world.num_users=3",
    "world.adaptation_minutes=0.4",
    "world.chunk_seconds=6",
    "world.test_mixtures=2",
    "world.test_seconds=4",
    "world.speech.user_voice_pool=6",
    "world.speech.pretrain_voices=4",
    "world.speech.pretrain_utterances_per_voice=3",
    "world.speech.babble_voices=4",
    "world.noise.pretrain_environments=3",
    "world.noise.pretrain_seconds_per_environment=6",
    "world.workers=1",
]


def tiny_config(cache_dir, *extra: str):
    return load_config(
        overrides=[
            *TINY_WORLD,
            f"world.cache_dir={cache_dir}",
            f"federation.cache_dir={cache_dir}/results",  # never the user's own result cache
            *extra,
        ]
    )


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A 3-user world with every noise family represented across users and the pretraining pool."""
    from fedpse.world.cache import build_world

    cache = tmp_path_factory.mktemp("worlds")
    cfg = tiny_config(cache, "world.noise.families=[babble, hum, clatter]")
    return cfg, build_world(cfg, progress=False)


_RAY_ALLOWED = {"now": False}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before the item's fixtures (module-scoped ones included) are set up: may it start Ray?"""
    _RAY_ALLOWED["now"] = item.get_closest_marker("ray") is not None


def pytest_configure(config):
    try:
        import ray
    except ImportError:
        return
    original = ray.init

    def guarded_init(*args, **kwargs):
        if not _RAY_ALLOWED["now"]:
            raise RuntimeError("this test starts Ray: mark it (or its module) with @pytest.mark.ray")
        return original(*args, **kwargs)

    ray.init = guarded_init

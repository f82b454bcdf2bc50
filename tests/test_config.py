"""Config: YAML + --set overrides into typed dataclasses, with errors that name the key."""

import pytest
import yaml

from fedpse.config import ConfigError, describe, dump_config, load_config
from fedpse.world.reader import world_key


def test_default_config_loads_with_documented_defaults():
    cfg = load_config()
    assert cfg.seed == 0
    assert cfg.world.num_users == 40
    assert cfg.world.adaptation_minutes == 5.0
    assert cfg.world.test_mixtures == 6 and cfg.world.test_seconds == 10.0
    assert set(cfg.world.noise.families) >= {"stationary", "babble", "hum", "clatter", "traffic", "music"}


def test_overrides_are_typed_and_nested():
    cfg = load_config(
        overrides=["world.num_users=7", "world.snr_db=[0, 5]", "world.room.enabled=true", "seed=3"]
    )
    assert cfg.world.num_users == 7
    assert cfg.world.snr_db == [0.0, 5.0]
    assert cfg.world.room.enabled is True
    assert cfg.seed == 3


def test_integers_are_accepted_for_floats():
    assert load_config(overrides=["world.adaptation_minutes=3"]).world.adaptation_minutes == 3.0


def test_exponent_numbers_without_a_dot_are_numbers():
    # YAML 1.1 reads 1e-4 as a string; in a float field it means the number
    assert load_config(overrides=["pretrain.lr=1e-4"]).pretrain.lr == pytest.approx(1e-4)
    assert load_config(overrides=["adapt.lr=2E-3"]).adapt.lr == pytest.approx(2e-3)
    with pytest.raises(ConfigError, match="pretrain.lr: expected a number, got 'e-4'"):
        load_config(overrides=["pretrain.lr=e-4"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("world.num_userz=3", "world.num_userz: unknown config key"),
        ("world.num_users=many", "world.num_users: expected an integer"),
        ("world.num_users=0", "world.num_users: expected >= 1"),
        ("world.room.target=wet", "world.room.target: expected one of"),
        ("world.snr_db=[10, 0]", "world.snr_db: expected [low, high]"),
        ("world.speech.source=librispeech", "world.speech.path: required"),
        ("world.room.enabled=maybe", "world.room.enabled: expected true/false"),
        ("teacher.magnitude=log", "teacher.magnitude: expected one of"),
        ("world=3", "world: expected a mapping"),
        ("nonsense", "expected dotted.key=value"),
    ],
)
def test_bad_values_name_the_key_and_what_was_expected(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(overrides=[override])


def test_an_unknown_noise_family_is_refused_before_any_world_work():
    cfg = load_config(overrides=["world.noise.families=[stationary, jackhammer]"])  # families are the world's
    with pytest.raises(ConfigError, match="world.noise.families: unknown family 'jackhammer'"):
        world_key(cfg)  # every way to a world (build, open) goes through its key


def test_unknown_key_in_a_file_names_the_dotted_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"world": {"noise": {"colour": "pink"}}}))
    with pytest.raises(ConfigError, match=r"world\.noise\.colour: unknown config key"):
        load_config(path)


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("world: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(overrides=["world.num_users=5", "world.noise.families=[hum]"])
    path = dump_config(cfg, tmp_path / "out" / "config.yaml")
    assert load_config(path) == cfg


def test_every_key_is_documented():
    keys = describe()
    assert all(help_text for _, _, help_text in keys), [k for k, _, h in keys if not h]
    assert "world.cache_dir" in {k for k, _, _ in keys}

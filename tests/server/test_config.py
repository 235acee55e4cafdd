"""Settings come from one place: flags over KSS_* env over defaults."""

from pathlib import Path

import pytest

from server.config import OPTIONS, build_parser, load_settings


def test_env_then_flags(tmp_path):
    env = {
        "KSS_PORT": "9000",
        "KSS_POOL_SIZE": "5",
        "KSS_API_KEYS": "a=key-aaaaaaaa,b=key-bbbbbbbb",
        "KSS_DATA_DIR": str(tmp_path),
    }
    s = load_settings([], env)
    assert (s.port, s.pool_size) == (9000, 5)
    assert s.api_keys == (("a", "key-aaaaaaaa"), ("b", "key-bbbbbbbb"))
    s = load_settings(["--port", "9001", "--api-key", "c=key-cccccccc", "--no-sandbox"], env)
    assert s.port == 9001 and s.api_keys == (("c", "key-cccccccc"),) and s.sandbox == "off"
    assert s.data_dir == Path(tmp_path).resolve()
    assert len(str(s.runtime_dir)) < 60  # ipc socket paths must stay under 107 bytes


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "x"],
        ["--api-key", "nokey"],
        ["--api-key", "t=short"],
        ["--api-key", "a/b=key-12345678"],
        ["--sandbox", "maybe"],
        ["--pool-size", "-1"],
        ["--kernel-cpus", "-0.5"],
        ["--kernel-cpus", "many"],
    ],
)
def test_bad_values_are_clear_errors(argv, tmp_path):
    with pytest.raises(ValueError):
        load_settings([*argv, "--data-dir", str(tmp_path)], {})


def test_generated_key_is_kept_across_restarts(tmp_path):
    first = load_settings(["--data-dir", str(tmp_path)], {})
    second = load_settings(["--data-dir", str(tmp_path)], {})
    assert first.generated_key and first.api_keys == second.api_keys
    assert (tmp_path / "api-key").stat().st_mode & 0o777 == 0o600


def test_options_of_the_parts_land_in_their_parts(tmp_path):
    env = {"KSS_KERNEL_CPUS": "1.5", "KSS_DATA_DIR": str(tmp_path), "KSS_STOP_STRAYS": "off"}
    argv = ["--kernel-memory-bytes", "268435456", "--output-cap-bytes", "1000"]
    s = load_settings([*argv, "--user-quota-bytes", "7"], env)
    assert (s.sandbox_policy.cpus, s.sandbox_policy.memory_bytes) == (1.5, 256 << 20)
    assert (s.limits.client_cap, s.limits.stop_strays, s.files.quota) == (1000, False, 7)


def test_every_option_has_one_flag_one_variable_and_its_help(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # no wrapping inside a help text
    flags = [o.flag for o in OPTIONS.values()]
    assert len(flags) == len(set(flags)) == len({o.env for o in OPTIONS.values()})
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for option in OPTIONS.values():
        assert option.flag in out and option.env in out
        assert " ".join(option.help.split()) in out


def test_preload_is_a_list_of_modules_and_empty_turns_it_off(tmp_path):
    base = ["--data-dir", str(tmp_path)]
    assert load_settings(base, {}).preload == ("numpy", "pandas", "matplotlib.pyplot")
    assert load_settings([*base, "--preload", ""], {}).preload == ()
    assert load_settings(base, {"KSS_PRELOAD": ""}).preload == ()
    assert load_settings(base, {"KSS_PRELOAD": "scipy, sklearn"}).preload == ("scipy", "sklearn")
    with pytest.raises(ValueError):
        load_settings([*base, "--preload", "os; import shutil"], {})

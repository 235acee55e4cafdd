"""Settings come from one place: flags over KSS_* env over defaults."""

from pathlib import Path

import pytest

from server.app import sandbox_policy
from server.config import load_settings


def test_env_then_flags(tmp_path):
    env = {
        "KSS_PORT": "9000",
        "KSS_POOL_SIZE": "5",
        "KSS_API_KEYS": "a=key-aaaaaaaa,b=key-bbbbbbbb",
        "KSS_DATA_DIR": str(tmp_path),
    }
    s = load_settings([], env)
    assert (s.port, s.pool_size) == (9000, 5)
    assert s.tenants_by_key == {"key-aaaaaaaa": "a", "key-bbbbbbbb": "b"}
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


def test_kernel_limits_reach_the_sandbox_policy(tmp_path):
    env = {"KSS_KERNEL_CPUS": "1.5", "KSS_DATA_DIR": str(tmp_path)}
    policy = sandbox_policy(load_settings(["--kernel-memory-bytes", "268435456"], env))
    assert (policy.cpus, policy.memory_bytes) == (1.5, 256 << 20)

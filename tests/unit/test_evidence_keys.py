"""The pseudonym key ring: current key, retired keys from a file, and what it rejects."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tombstone.errors import ConfigError
from tombstone.pseudonym import KeyRing, Pseudonymizer, load_keys_file
from tombstone.settings import PseudonymSettings

CURRENT = "current-secret-0123456789abcdef"
OLD = "retired-secret-0123456789abcdef"


def keys_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "pseudonym-keys"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def settings(monkeypatch: pytest.MonkeyPatch, key: str | None = CURRENT, key_id: str = "k2",
             path: Path | None = None) -> PseudonymSettings:
    for name in ("TOMBSTONE_PSEUDONYM_KEY", "TOMBSTONE_PSEUDONYM_KEY_ID", "TOMBSTONE_PSEUDONYM_KEYS_FILE"):
        monkeypatch.delenv(name, raising=False)
    if key is not None:
        monkeypatch.setenv("TOMBSTONE_PSEUDONYM_KEY", key)
    monkeypatch.setenv("TOMBSTONE_PSEUDONYM_KEY_ID", key_id)
    if path is not None:
        monkeypatch.setenv("TOMBSTONE_PSEUDONYM_KEYS_FILE", str(path))
    return PseudonymSettings()


def test_ring_has_current_and_retired_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = keys_file(tmp_path, f"# retired on rotation\n\nk1 = {OLD}\n")

    ring = KeyRing.from_settings(settings(monkeypatch, path=path))

    assert ring.key_ids == ["k1", "k2"]
    assert ring.current.key_id == "k2"
    assert ring.get("k1") == Pseudonymizer(OLD.encode(), "k1")
    assert ring.get("k0") is None


def test_ring_accepts_current_key_in_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = keys_file(tmp_path, f"k1 = {OLD}\nk2 = {CURRENT}\n")

    assert KeyRing.from_settings(settings(monkeypatch, path=path)).key_ids == ["k1", "k2"]


def test_ring_rejects_other_secret_for_current_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = keys_file(tmp_path, f"k2 = {OLD}\n")

    with pytest.raises(ConfigError, match="lists key id 'k2' with another secret"):
        KeyRing.from_settings(settings(monkeypatch, path=path))


def test_ring_without_current_key_for_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = keys_file(tmp_path, f"k1 = {OLD}\n")

    ring = KeyRing.from_settings(settings(monkeypatch, key=None, path=path), require_current=False)

    assert ring.key_ids == ["k1"]
    with pytest.raises(ConfigError, match="TOMBSTONE_PSEUDONYM_KEY is not set"):
        ring.current


def test_empty_keys_file_variable_means_no_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    current = settings(monkeypatch)
    monkeypatch.setenv("TOMBSTONE_PSEUDONYM_KEYS_FILE", "")

    assert KeyRing.from_settings(PseudonymSettings()).key_ids == ["k2"]
    assert current.keys_file is None


def test_keys_file_rejects_world_readable(tmp_path: Path) -> None:
    path = keys_file(tmp_path, f"k1 = {OLD}\n", mode=0o644)

    with pytest.raises(ConfigError, match="mode 0644") as caught:
        load_keys_file(path)
    assert "chmod 600" in str(caught.value)


def test_keys_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_keys_file(tmp_path / "absent")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{OLD}\n", "line 1 is not of the form KEY_ID = SECRET"),
        (f"bad id = {OLD}\n", "line 1: the key id 'bad id' is invalid"),
        ("k1 = short\n", "line 1: the secret of key id 'k1' is shorter than 16 bytes"),
        (f"k1 = {OLD}\nk1 = {CURRENT}\n", "line 2: key id 'k1' is listed again with another secret"),
    ],
)
def test_keys_file_rejects_invalid_line(tmp_path: Path, text: str, expected: str) -> None:
    path = keys_file(tmp_path, text)

    with pytest.raises(ConfigError, match=expected) as caught:
        load_keys_file(path)
    assert OLD not in str(caught.value)
    assert CURRENT not in str(caught.value)


def test_keys_file_in_git_tree_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / ".git").mkdir()
    path = keys_file(tmp_path, f"k1 = {OLD}\n")

    with caplog.at_level(logging.WARNING, logger="tombstone.pseudonym"):
        assert load_keys_file(path) == {"k1": OLD.encode()}

    assert "inside the Git work tree" in caplog.text
    assert OLD not in caplog.text


def test_repr_hides_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = keys_file(tmp_path, f"k1 = {OLD}\n")
    ring = KeyRing.from_settings(settings(monkeypatch, path=path))

    texts = [repr(ring), repr(ring.current), str(ring.current), repr(ring.get("k1"))]

    assert all(CURRENT not in text and OLD not in text for text in texts)
    assert "k2" in repr(ring.current)


def test_mac_differs_from_pseudonym() -> None:
    key = Pseudonymizer(CURRENT.encode(), "k2")

    assert key.mac("evidence-export-v1", b"customer:17") != key.pseudonym("customer:17")
    assert key.mac("evidence-export-v1", b"x") != key.mac("other", b"x")

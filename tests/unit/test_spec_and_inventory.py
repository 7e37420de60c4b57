"""Consumer specs (``tombstone.spec``) and the data inventory (``tombstone.inventory``)."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tombstone.errors import ConfigError
from tombstone.inventory import Inventory, load_inventory
from tombstone.spec import ConsumerSpec, load_spec

REPOSITORY = Path(__file__).resolve().parents[2]
CONSUMER_SPECS = sorted((REPOSITORY / "consumers").glob("*.toml"))
REPOSITORY_INVENTORY = REPOSITORY / "deploy" / "inventory.toml"

MINIMAL_SPEC = """
name = "search"
data_classes = ["customer_profile"]

[store]
kind = "null"
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --- consumer specs ---------------------------------------------------------------------


@pytest.mark.parametrize("path", CONSUMER_SPECS, ids=[path.name for path in CONSUMER_SPECS])
def test_load_spec_repository_spec(path: Path) -> None:
    spec = load_spec(path)

    assert isinstance(spec, ConsumerSpec)
    assert spec.data_classes != []


@pytest.mark.parametrize("path", CONSUMER_SPECS, ids=[path.name for path in CONSUMER_SPECS])
def test_repository_spec_listed_in_inventory(path: Path) -> None:
    # A worker whose store the inventory does not name would ack proofs the ledger ignores.
    spec = load_spec(path)
    inventory = load_inventory(REPOSITORY_INVENTORY)

    for data_class in spec.data_classes:
        assert spec.name in inventory.stores_for(data_class), f"{spec.name} / {data_class}"


def test_repository_inventory_stores_have_specs() -> None:
    # A store without a worker would keep every request of its data classes pending.
    spec_names = {load_spec(path).name for path in CONSUMER_SPECS}

    assert set(load_inventory(REPOSITORY_INVENTORY).all_stores()) <= spec_names


def test_load_spec_minimal(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "search.toml", MINIMAL_SPEC))

    assert spec.name == "search"
    assert spec.data_classes == ["customer_profile"]
    assert spec.store.kind == "null"
    assert spec.consumer_group == "tombstone.store.search"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param(MINIMAL_SPEC.replace('name = "search"', 'name = "search"\nbatch_sise = 10'),
                     "batch_sise", id="top_level"),
        pytest.param(MINIMAL_SPEC + "\n[retry]\nmax_attempt = 3\n", "max_attempt", id="retry"),
        pytest.param(MINIMAL_SPEC.replace('kind = "null"', 'kind = "null"\npath = "x"'),
                     "path", id="store"),
    ],
)
def test_load_spec_rejects_unknown_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, "search.toml", text)

    with pytest.raises(ConfigError) as caught:
        load_spec(path)

    assert key in str(caught.value)
    assert str(path) in str(caught.value)


def test_load_spec_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_spec(tmp_path / "absent.toml")


def test_load_spec_rejects_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_spec(write(tmp_path, "search.toml", "name = \n"))


def test_load_spec_rejects_unknown_store_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "search.toml", MINIMAL_SPEC.replace('"null"', '"mongodb"'))

    with pytest.raises(ConfigError, match="store"):
        load_spec(path)


def test_load_spec_expands_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_GROUP", "tombstone.store.search-eu")
    path = write(tmp_path, "search.toml", 'group_id = "${SEARCH_GROUP}"\n' + MINIMAL_SPEC)

    assert load_spec(path).group_id == "tombstone.store.search-eu"


def test_load_spec_expands_variable_inside_text(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_DIR", "/srv/tombstone")
    text = MINIMAL_SPEC.replace('kind = "null"', 'kind = "objects"\nroot = "${DATA_DIR}/objects"')

    spec = load_spec(write(tmp_path, "objects.toml", text))

    assert spec.store.root == "/srv/tombstone/objects"  # type: ignore[union-attr]


def test_load_spec_expands_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEARCH_GROUP", raising=False)
    path = write(tmp_path, "search.toml", 'group_id = "${SEARCH_GROUP:-fallback-group}"\n' + MINIMAL_SPEC)

    assert load_spec(path).group_id == "fallback-group"


def test_load_spec_set_variable_beats_default(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_GROUP", "from-env")
    path = write(tmp_path, "search.toml", 'group_id = "${SEARCH_GROUP:-fallback-group}"\n' + MINIMAL_SPEC)

    assert load_spec(path).group_id == "from-env"


def test_load_spec_empty_variable_uses_default(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # As in POSIX shells and Docker Compose, ${NAME:-default} also replaces an empty value.
    monkeypatch.setenv("SEARCH_GROUP", "")
    path = write(tmp_path, "search.toml", 'group_id = "${SEARCH_GROUP:-fallback-group}"\n' + MINIMAL_SPEC)

    assert load_spec(path).group_id == "fallback-group"


def test_load_spec_expands_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_BATCH_SIZE", "250")
    path = write(tmp_path, "search.toml", 'batch_size = "${SEARCH_BATCH_SIZE}"\n' + MINIMAL_SPEC)

    assert load_spec(path).batch_size == 250


def test_load_spec_expands_in_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTRA_CLASS", "billing")
    text = MINIMAL_SPEC.replace('["customer_profile"]', '["customer_profile", "${EXTRA_CLASS}"]')

    assert load_spec(write(tmp_path, "search.toml", text)).data_classes == ["customer_profile", "billing"]


def test_load_spec_rejects_missing_variable(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOMBSTONE_TEST_UNSET_VARIABLE", raising=False)
    path = write(tmp_path, "search.toml",
                 'group_id = "${TOMBSTONE_TEST_UNSET_VARIABLE}"\n' + MINIMAL_SPEC)

    with pytest.raises(ConfigError) as caught:
        load_spec(path)

    assert "TOMBSTONE_TEST_UNSET_VARIABLE" in str(caught.value)
    assert str(path) in str(caught.value)


def test_load_spec_leaves_plain_dollar(tmp_path: Path) -> None:
    path = write(tmp_path, "search.toml", 'group_id = "cost-$5"\n' + MINIMAL_SPEC)

    assert load_spec(path).group_id == "cost-$5"


# --- inventory --------------------------------------------------------------------------

INVENTORY = """
version = "1"

[data_classes.customer_profile]
description = "Name, e-mail and address of a customer."
subject_types = ["customer"]
stores = [
  { store = "sqlite", action = "delete" },
  { store = "search", action = "delete", max_delay_s = 3600 },
]

[data_classes.billing]
subject_types = ["customer"]
stores = [{ store = "warehouse", action = "delete" }]
"""


def test_load_inventory_reads_data_classes(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, "inventory.toml", INVENTORY))

    assert sorted(inventory.data_classes) == ["billing", "customer_profile"]
    assert inventory.data_classes["customer_profile"].stores[1].max_delay_s == 3600


def test_inventory_stores_for_known_class(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, "inventory.toml", INVENTORY))

    assert inventory.stores_for("customer_profile") == ["sqlite", "search"]
    assert inventory.stores_for("billing") == ["warehouse"]


def test_inventory_stores_for_unknown_class(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, "inventory.toml", INVENTORY))

    assert inventory.stores_for("telemetry") == []


def test_inventory_all_stores(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, "inventory.toml", INVENTORY))

    assert inventory.all_stores() == ["search", "sqlite", "warehouse"]


def test_load_inventory_rejects_class_without_stores(tmp_path: Path) -> None:
    text = INVENTORY + '\n[data_classes.telemetry]\nsubject_types = ["customer"]\nstores = []\n'

    with pytest.raises(ConfigError) as caught:
        load_inventory(write(tmp_path, "inventory.toml", text))

    assert "telemetry" in str(caught.value)
    assert "stores" in str(caught.value)


def test_load_inventory_rejects_class_missing_stores_key(tmp_path: Path) -> None:
    text = INVENTORY + '\n[data_classes.telemetry]\nsubject_types = ["customer"]\n'

    with pytest.raises(ConfigError) as caught:
        load_inventory(write(tmp_path, "inventory.toml", text))

    assert "telemetry" in str(caught.value)


def test_load_inventory_rejects_duplicate_store(tmp_path: Path) -> None:
    text = INVENTORY.replace('{ store = "warehouse", action = "delete" }',
                             '{ store = "warehouse", action = "delete" }, { store = "warehouse", action = "delete" }')

    with pytest.raises(ConfigError) as caught:
        load_inventory(write(tmp_path, "inventory.toml", text))

    assert "warehouse" in str(caught.value)
    assert "billing" in str(caught.value)


def test_load_inventory_rejects_unknown_key(tmp_path: Path) -> None:
    text = INVENTORY.replace('{ store = "warehouse", action = "delete" }',
                             '{ store = "warehouse", action = "delete", acton = "delete" }')

    with pytest.raises(ConfigError, match="acton"):
        load_inventory(write(tmp_path, "inventory.toml", text))


def test_load_inventory_rejects_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data_classes"):
        load_inventory(write(tmp_path, "inventory.toml", 'version = "1"\n'))


def test_inventory_model_rejects_class_without_stores() -> None:
    with pytest.raises(ValueError, match="telemetry"):
        Inventory.model_validate(
            {"data_classes": {"telemetry": {"subject_types": ["customer"], "stores": []}}}
        )


# --- deletion policy --------------------------------------------------------------------

def policy_inventory(entry: str) -> str:
    return f'[data_classes.billing]\nsubject_types = ["customer"]\nstores = [{{ store = "warehouse", {entry} }}]\n'


@pytest.mark.parametrize(("entry", "complaint"), [
    ("max_delay_s = 60", "action"),
    ('action = "hide"', "purge_after_s"),
    ('action = "hide", purge_after_s = 7200, max_delay_s = 3600', "exceeds max_delay_s"),
    ('action = "anonymize", legal_basis = "tax law"', "fields"),
    ('action = "anonymize", fields = ["email"]', "legal basis"),
    ('action = "retain", retain_days = 30', "legal basis"),
    ('action = "retain", legal_basis = "tax law"', "exactly one of retain_days and retain_until"),
    ('action = "retain", legal_basis = "tax law", retain_days = 3, retain_until = 2030-01-01', "exactly one"),
    ('action = "delete", fields = ["email"]', "fields applies to action anonymize only"),
    ('action = "delete", purge_after_s = 5', "purge_after_s applies to action hide only"),
    ('action = "shred"', "action"),
])
def test_policy_entries_missing_their_parts_are_rejected_naming_the_entry(
        tmp_path: Path, entry: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_inventory(write(tmp_path, "inventory.toml", policy_inventory(entry)))
    message = str(caught.value)
    assert complaint in message
    assert "billing" in message


def test_complete_policies_load(tmp_path: Path) -> None:
    text = """
[data_classes.billing]
subject_types = ["customer"]
stores = [
  { store = "db", action = "hide", purge_after_s = 600, max_delay_s = 3600 },
  { store = "warehouse", action = "anonymize", fields = ["email"], legal_basis = "statistics" },
  { store = "ledger-db", action = "retain", legal_basis = "tax law", retain_days = 3650 },
  { store = "archive", action = "retain", legal_basis = "court order 17", retain_until = 2031-06-30 },
]
"""
    inventory = load_inventory(write(tmp_path, "inventory.toml", text))
    requested = datetime(2026, 1, 1, tzinfo=UTC)
    assert inventory.policy("billing", "ledger-db").retained_until(requested) == datetime(2035, 12, 30, tzinfo=UTC)
    assert inventory.policy("billing", "archive").retained_until(requested) == datetime(2031, 6, 30, tzinfo=UTC)
    assert inventory.policy("billing", "db").retained_until(requested) is None
    assert inventory.policy("billing", "nowhere") is None


def test_shipped_inventory_is_valid() -> None:
    from tombstone.inventory import default_inventory_path

    load_inventory(default_inventory_path())

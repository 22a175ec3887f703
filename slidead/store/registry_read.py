"""What the model registry holds, read fast: each version of ``slidead-<type>-<family>``, its
tags, and which one is the champion. On a sqlite registry this reads MLflow's own tables
(``model_versions``, ``model_version_tags``, ``registered_model_aliases``) read-only with Python's
``sqlite3``: importing MLflow and building its tracking store took 9 s of a 10 s listing, and a
re-run of a scored night needs the champion's version only. Any other registry, or a schema this
does not know, is read through the MLflow client."""

from __future__ import annotations

from dataclasses import dataclass

CHAMPION = "champion"  # the alias of the version in use


@dataclass(frozen=True)
class VersionRow:
    """A registered version as ``slidead models`` lists it."""

    name: str
    version: int
    run_id: str | None
    tags: dict
    champion: bool


def list_versions(tracking_uri: str, prefix: str) -> list[VersionRow]:
    """Every version of the registered models named ``<prefix><family>``, sorted. On a sqlite
    registry it reads MLflow's registry tables directly (read-only; importing MLflow and building
    its tracking store took 9 s of a 10 s listing); anything else, or a schema it does not know,
    goes through the MLflow client."""
    rows = _read_tables(tracking_uri, lambda con: _sqlite_versions(con, prefix))
    return rows if rows is not None else _client_versions(tracking_uri, prefix)


def quick_champion_version(tracking_uri: str, name: str) -> int | None:
    """The champion version of ``name`` from a sqlite registry's tables (read-only, no MLflow
    import); None for any other registry, no champion, or a schema this does not know."""
    row = _read_tables(
        tracking_uri,
        lambda con: con.execute(
            "SELECT CAST(a.version AS INTEGER) FROM registered_model_aliases a JOIN model_versions v "
            "ON v.name = a.name AND CAST(v.version AS INTEGER) = CAST(a.version AS INTEGER) "
            "WHERE a.alias = ? AND a.name = ? AND coalesce(v.current_stage, '') <> 'Deleted_Internal'",
            [CHAMPION, name],
        ).fetchone(),
    )
    return int(row[0]) if row else None


def quick_champion(tracking_uri: str, name: str) -> VersionRow | None:
    """The champion version of ``name`` with its run and tags, from a sqlite registry's tables
    (read-only, no MLflow import): what a night needs to take the champion's files from the
    local cache without MLflow's client. None for any other registry, no champion, an answer
    that is not one version (say, the same name in two workspaces), or a schema this does not
    know."""

    def read(con):
        rows = con.execute(
            "SELECT CAST(v.version AS INTEGER), v.run_id FROM registered_model_aliases a JOIN model_versions v "
            "ON v.name = a.name AND CAST(v.version AS INTEGER) = CAST(a.version AS INTEGER) "
            "WHERE a.alias = ? AND a.name = ? AND coalesce(v.current_stage, '') <> 'Deleted_Internal'",
            [CHAMPION, name],
        ).fetchall()
        if len(rows) != 1:
            return None
        version, run_id = rows[0]
        tags = dict(
            con.execute(
                "SELECT key, value FROM model_version_tags WHERE name = ? AND CAST(version AS INTEGER) = ?",
                [name, int(version)],
            ).fetchall()
        )
        return VersionRow(name, int(version), run_id, tags, True)

    return _read_tables(tracking_uri, read)


def _read_tables(tracking_uri: str, read):
    """``read(connection)`` on a sqlite registry opened read-only; None when the registry is not
    sqlite, or its file or schema is not what this knows."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{tracking_uri.removeprefix('sqlite:///')}?mode=ro", uri=True)
        try:
            return read(con)
        finally:
            con.close()
    except sqlite3.Error:
        return None


def _client_versions(tracking_uri: str, prefix: str) -> list[VersionRow]:
    import mlflow  # only for a registry without tables to read

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    found = client.search_registered_models(filter_string=f"name LIKE '{quote_name(prefix)}%'")
    rows = []
    for name in sorted(m.name for m in found if _family_of(m.name, prefix)):
        champ = champion_of(client, name)
        for v in versions_of(client, name):
            champion = champ is not None and champ.version == v.version
            rows.append(VersionRow(name, int(v.version), v.run_id, dict(v.tags), champion))
    return rows


def champion_of(client, name: str):
    """The champion ``ModelVersion`` of ``name`` through an MLflow client, or None when there is
    none (no such model or alias); anything else, an outage, is raised, not taken for "no champion"."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def versions_of(client, name: str) -> list:
    """Every version of ``name`` through an MLflow client, oldest first ([] for no such model)."""
    from mlflow.exceptions import MlflowException

    try:
        return sorted(client.search_model_versions(f"name='{quote_name(name)}'"), key=lambda v: int(v.version))
    except MlflowException:
        return []


def quote_name(name: str) -> str:
    """``name`` for an MLflow filter string; one with a quote in it is refused."""
    if "'" in name:
        raise ValueError(f"model name {name!r} must not contain quotes")
    return name


def _family_of(name: str, prefix: str) -> bool:
    return name.startswith(prefix) and bool(name[len(prefix) :]) and "-" not in name[len(prefix) :]


def _sqlite_versions(con, prefix: str) -> list[VersionRow]:
    like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    versions = con.execute(
        "SELECT name, CAST(version AS INTEGER), run_id FROM model_versions WHERE name LIKE ? ESCAPE '\\' "
        "AND coalesce(current_stage, '') <> 'Deleted_Internal'",
        [like],
    ).fetchall()
    tags: dict[tuple[str, int], dict] = {}
    for key, value, name, version in con.execute(
        "SELECT key, value, name, CAST(version AS INTEGER) FROM model_version_tags WHERE name LIKE ? ESCAPE '\\'",
        [like],
    ):
        tags.setdefault((name, version), {})[key] = value
    champions = {
        (name, int(version))
        for name, version in con.execute(
            "SELECT name, version FROM registered_model_aliases WHERE alias = ? AND name LIKE ? ESCAPE '\\'",
            [CHAMPION, like],
        )
    }
    return sorted(
        (
            VersionRow(name, version, run_id, tags.get((name, version), {}), (name, version) in champions)
            for name, version, run_id in versions
            if _family_of(name, prefix)
        ),
        key=lambda r: (r.name, r.version),
    )

"""Alembic environment: the database URL comes from the broker's settings (passed in by `broker db upgrade`)."""

from __future__ import annotations

from alembic import context

from broker.adapters.database import make_engine
from broker.adapters.orm import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            driver = connection.connection.driver_connection
            if sqlite:
                # SQLite alters most of a table by building a new one and dropping the old (Alembic's batch mode),
                # and dropping a table that other rows refer to fails while foreign keys are enforced. SQLite's own
                # procedure (https://www.sqlite.org/lang_altertable.html, section 7): enforcement off outside the
                # transaction — the pragma does nothing inside one — then `foreign_key_check` before the commit.
                driver.execute("PRAGMA foreign_keys=OFF")
            try:
                context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
                with context.begin_transaction():
                    context.run_migrations()
                    if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                        raise RuntimeError("the migration left rows whose foreign keys refer to nothing: rolled back")
            finally:
                if sqlite:
                    driver.execute("PRAGMA foreign_keys=ON")
    finally:
        engine.dispose()  # also when a migration fails: no pooled connection is left open


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

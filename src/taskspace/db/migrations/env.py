"""Alembic environment: migrations run on the connection handed over by taskspace.db.migrate."""

from alembic import context

from taskspace.db.models import Base, UTCDateTime

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Run migrations through taskspace.db.migrate.upgrade (it provides the connection).")



def render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    # Migrations must not depend on the models module: write UTC columns as plain DateTime.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    render_item=render_item,
)
with context.begin_transaction():
    context.run_migrations()

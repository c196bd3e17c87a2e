"""Flask extensions, created unbound and attached to an app in create_app()."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast

from flask_bootstrap import Bootstrap5
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import CursorResult, MetaData, Result, Table
from sqlalchemy.orm import DeclarativeBase

# Named constraints keep Alembic migrations identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with a naming convention for constraints."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)

    if TYPE_CHECKING:
        # Every model here is mapped to a plain Table; SQLAlchemy types it as any FromClause,
        # which insert()/update()/delete() do not accept.
        __table__: ClassVar[Table]


db = SQLAlchemy(model_class=Base)


def affected(result: Result[Any]) -> int:
    """Rows an INSERT/UPDATE/DELETE touched (`Session.execute` is typed as returning any Result)."""
    return cast(CursorResult[Any], result).rowcount or 0
migrate = Migrate()
csrf = CSRFProtect()
login_manager = LoginManager()
bootstrap = Bootstrap5()

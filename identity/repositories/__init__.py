"""The queries, one module per noun. Nothing else in identity builds SQL; callers use
``repositories.<function>``, re-exported here."""

from identity.repositories.audit_events import *  # noqa: F403
from identity.repositories.browser_sessions import *  # noqa: F403
from identity.repositories.cache_generations import *  # noqa: F403
from identity.repositories.clients import *  # noqa: F403
from identity.repositories.device_authorizations import *  # noqa: F403
from identity.repositories.emailed_secrets import *  # noqa: F403
from identity.repositories.factors import *  # noqa: F403
from identity.repositories.federated_identities import *  # noqa: F403
from identity.repositories.grants import *  # noqa: F403
from identity.repositories.outbox import *  # noqa: F403
from identity.repositories.passkeys import *  # noqa: F403
from identity.repositories.providers import *  # noqa: F403
from identity.repositories.refresh_tokens import *  # noqa: F403
from identity.repositories.revoked_tokens import *  # noqa: F403
from identity.repositories.roles import *  # noqa: F403
from identity.repositories.users import *  # noqa: F403
from identity.repositories.webhooks import *  # noqa: F403

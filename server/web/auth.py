"""The shape of a SigV4 ``Authorization`` header (signatures are not verified).

The service refuses a request without credentials (``MissingAuthenticationTokenException``)
and one whose ``Authorization`` header lacks a SigV4 part
(``IncompleteSignatureException``, listing every missing part). This module checks the
header's shape, as the service does before looking at the signature; the header is read
with :mod:`kpl.protocol.sigv4`, whose functions also compute and compare signatures.
"""

from __future__ import annotations

from collections.abc import Mapping

from kpl.protocol.sigv4 import ALGORITHM, authorization_params
from server.core.errors import IncompleteSignatureException, MissingAuthenticationTokenException

__all__ = ["check_authorization"]

_PARTS = ("Credential", "Signature", "SignedHeaders")
_PREFIX = ALGORITHM + " "


def check_authorization(headers: Mapping[str, str], query: Mapping[str, str]) -> None:
    """Raise the service's error unless the request carries a SigV4-shaped signature."""
    auth = headers.get("Authorization")
    if auth is None:
        if "X-Amz-Algorithm" in query:
            return  # presigned query string: accepted as is, like a header signature
        raise MissingAuthenticationTokenException("Missing Authentication Token")
    has_date = "X-Amz-Date" in headers or "Date" in headers
    if (
        has_date
        and auth.startswith(_PREFIX)
        and "Credential=" in auth
        and "Signature=" in auth
        and "SignedHeaders=" in auth
    ):
        return
    _, params = authorization_params(auth)
    message = "".join(
        f"Authorization header requires '{part}' parameter. "
        for part in _PARTS
        if part not in params
    )
    if not has_date:
        message += (
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
            "header. "
        )
    if not auth.startswith(_PREFIX) and not message:
        message = f"Unsupported AWS 'algorithm': '{auth.split(' ', 1)[0]}'. "
    raise IncompleteSignatureException(message + "Authorization=" + auth)

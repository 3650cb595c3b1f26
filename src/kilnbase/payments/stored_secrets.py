"""Reading a stored payments secret back: a ciphertext the project's SecretBox can no longer open (its key was
replaced, the data directory restored from elsewhere, a row altered) is a clear 4xx/503 that tells the admin
to set the secret again, not a server error, since setting it again is the whole fix."""

from __future__ import annotations

from kilnbase.http.errors import ApiError
from kilnbase.keys.secret_box import DecryptionError, SecretBox


def decrypt(box: SecretBox, ciphertext: str, context: str, *, name: str, fix: str, status: int = 400) -> str:
    """`ciphertext` opened, or `status` PAYMENT_CONFIG_INVALID naming the secret (`name`) and the `fix`.
    The webhook receivers pass 503, so that the provider retries once the secret is set again."""
    try:
        return box.decrypt(ciphertext, context=context)
    except DecryptionError:
        raise ApiError(
            status,
            "PAYMENT_CONFIG_INVALID",
            f"The stored {name} can no longer be decrypted (the project's encryption key has changed, or "
            "the stored value was altered)",
            fix,
        ) from None

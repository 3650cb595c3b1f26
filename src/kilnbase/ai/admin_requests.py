"""The `/api/ai` administration bodies as typed models, with InsForge's field names and its 400 on anything
malformed.

Models are strict (a JSON string is never coerced to a number or a boolean) and refuse unknown fields, so a
client mistake (a misspelt `usdPerDay` would otherwise silently remove a spend cap) is reported instead of
guessed at: `http.json_body.parse` answers 400 INVALID_INPUT listing every wrong field as `field: reason`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

#: The longest model id (its characters).
MAX_MODEL_ID = 200
#: A model id, or a pattern ending in `*` (`openai/*`).
ModelId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_MODEL_ID)]
ApiKey = Annotated[str, StringConstraints(strip_whitespace=True, min_length=10, max_length=500)]
Modality = Literal["text", "image", "audio", "video", "file"]
ClientSystemMessages = Literal["append", "drop", "refuse"]
#: Counts as their columns hold them: `rpm` and a key's `maxTokens` are `integer`, the token limits `bigint`;
#: past that, the insert failed (a 500) instead of the field being refused.
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
SmallCount = Annotated[int, Field(ge=0, le=2**31 - 1)]
MaxTokens = Annotated[int, Field(gt=0, le=2**31 - 1)]
Usd = Annotated[float, Field(ge=0)]
#: A request field name as OpenAI and OpenRouter spell them (`plugins`, `web_search_options`).
RequestField = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


def _usd(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


# -- configurations ------------------------------------------------------------------------------------------
class ConfigurationChanges(_Body):
    systemPrompt: Annotated[str, StringConstraints(max_length=100_000)] | None = None
    clientSystemMessages: ClientSystemMessages = "append"
    fallbackModels: Annotated[list[ModelId], Field(max_length=10)] = Field(default_factory=list)

    def columns(self) -> dict[str, Any]:
        """The columns to write: only the fields the request sent."""
        sent = self.model_fields_set
        changes: dict[str, Any] = {}
        if "systemPrompt" in sent:
            changes["system_prompt"] = self.systemPrompt
        if "clientSystemMessages" in sent:
            changes["client_system_messages"] = self.clientSystemMessages
        if "fallbackModels" in sent:
            changes["fallback_models"] = self.fallbackModels
        return changes


class ConfigurationUpdate(ConfigurationChanges):
    @model_validator(mode="after")
    def _something(self) -> ConfigurationUpdate:
        if not self.columns():
            raise PydanticCustomError(
                "nothing_to_update",
                "nothing to update: send systemPrompt, clientSystemMessages or fallbackModels",
            )
        return self


class ConfigurationCreate(ConfigurationChanges):
    modelId: ModelId
    provider: Annotated[str, StringConstraints(min_length=1, max_length=100)] = "openrouter"
    inputModality: Annotated[list[Modality], Field(min_length=1)] | None = None
    outputModality: Annotated[list[Modality], Field(min_length=1)] | None = None
    #: InsForge's older single-modality field: the default of both lists.
    modality: Modality | None = None

    def columns(self) -> dict[str, Any]:
        default = [self.modality or "text"]
        return {
            **super().columns(),
            "model_id": self.modelId,
            "provider": self.provider,
            "input_modality": self.inputModality or default,
            "output_modality": self.outputModality or default,
        }


# -- credentials ---------------------------------------------------------------------------------------------
class GatewayCredential(_Body):
    apiKey: ApiKey


class InsforgeConfig(_Body):
    apiKey: ApiKey | None = None
    managementKey: ApiKey | None = None

    @model_validator(mode="after")
    def _something(self) -> InsforgeConfig:
        if self.apiKey is None and self.managementKey is None:
            raise PydanticCustomError("nothing_to_update", "send apiKey and/or managementKey")
        return self


# -- gateway keys, limits, policy, providers, prices ---------------------------------------------------------
class Limits(_Body):
    """Each optional; null (or absent) means no such limit."""

    rpm: SmallCount | None = None
    tpm: Count | None = None
    tokensPerDay: Count | None = None
    usdPerDay: Usd | None = None
    usdPerMonth: Usd | None = None

    def columns(self) -> dict[str, Any]:
        return {
            "rpm": self.rpm,
            "tpm": self.tpm,
            "tokens_per_day": self.tokensPerDay,
            "usd_per_day": _usd(self.usdPerDay),
            "usd_per_month": _usd(self.usdPerMonth),
        }


class KeyCreate(_Body):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    models: Annotated[list[ModelId], Field(max_length=500)] | None = None
    maxTokens: MaxTokens | None = None
    limits: Limits | None = None


class PolicyUpdate(_Body):
    """The whole policy (a field left out takes its default)."""

    allowedModels: Annotated[list[ModelId], Field(max_length=500)] | None = None
    maxTokensCap: MaxTokens | None = None
    cacheEnabled: bool = False
    anonAccess: bool = False
    allowedRequestFields: list[RequestField] = Field(default_factory=list, max_length=100)


class ProviderPut(_Body):
    baseUrl: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2000)]
    apiKey: ApiKey | None = None


class PricePut(_Body):
    """USD per million tokens (as InsForge's model list shows prices), and USD per request and per image."""

    inputPrice: Usd = 0.0
    outputPrice: Usd = 0.0
    requestPrice: Usd = 0.0
    imagePrice: Usd = 0.0

    def columns(self) -> dict[str, Decimal]:
        """Per token, as OpenRouter's catalog and `Price` count."""
        million = Decimal(1_000_000)
        return {
            "prompt": Decimal(str(self.inputPrice)) / million,
            "completion": Decimal(str(self.outputPrice)) / million,
            "request": Decimal(str(self.requestPrice)),
            "image": Decimal(str(self.imagePrice)),
        }

"""`TuneStorage`: the Prefect block that says where experiments are stored and how to reach it."""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.core import Block
from prefect.types import SecretDict
from pydantic import Field, HttpUrl

from prefect_tune.storage._filesystem import Storage, StorageSpec


class TuneStorage(Block):
    """Where prefect-tune stores experiments: a local or NFS path, S3, GCS or any fsspec URL.

    Non-secret settings (``endpoint_url``, ``region_name``...) go in ``storage_options``;
    anything secret (keys, tokens, service-account JSON) in ``credentials``, which Prefect keeps
    encrypted and never shows. Both are passed to the fsspec filesystem together.

    Examples:
        Save a block once, then use it by name from any process::

            from prefect_tune import TuneStorage
            TuneStorage(
                storage_path="s3://my-bucket/experiments",
                credentials={"key": "AKIA...", "secret": "..."},
            ).save("tuning", overwrite=True)

            storage = TuneStorage.load("tuning")
            tuner = Tuner(train_fn, run_config=RunConfig(name="exp", storage=storage))
    """

    _block_type_name = "Tune Storage"
    _block_type_slug = "tune-storage"
    _description = (
        "Where prefect-tune stores experiments: a local or NFS path, S3, GCS or any fsspec URL, "
        "with the credentials to reach it."
    )
    _documentation_url = "https://docs.prefect.io/integrations/use-integrations"  # type: ignore[assignment]
    # Prefect's own storage-block icon, pinned to a commit as Prefect's file-system blocks pin it.
    # It must be an http(s) URL: Prefect validates it as `HttpUrl` when it registers or saves the
    # block type, so a self-contained `data:` URL would make `save()` fail.
    _logo_url = HttpUrl(
        "https://raw.githubusercontent.com/PrefectHQ/prefect/"
        "420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/filesystem.png"
    )
    _code_example: ClassVar[str] = """
```python
from prefect_tune import TuneStorage

tune_storage = TuneStorage.load("BLOCK_NAME")
```
"""

    storage_path: str = Field(
        default=...,
        description=(
            "The root under which experiments are stored: a local or NFS path, or an fsspec URL "
            "such as s3://bucket/path or gs://bucket/path."
        ),
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Non-secret options for the fsspec filesystem, for example endpoint_url or "
            "client_kwargs."
        ),
    )
    credentials: SecretDict | None = Field(
        default=None,
        description=(
            "Secret options merged into storage_options, for example key and secret for S3 or "
            "token for GCS."
        ),
    )

    def spec(self) -> StorageSpec:
        """The storage location with its credentials, ready to open (never log it)."""
        options = dict(self.storage_options)
        if self.credentials is not None:
            options.update(self.credentials.get_secret_value())
        return StorageSpec(self.storage_path, options)

    def get_storage(self) -> Storage:
        """Opens the storage root this block points at."""
        return self.spec().open()

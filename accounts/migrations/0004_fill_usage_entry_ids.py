"""Give every existing ledger row its own entry id, in batches."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import migrations


def fill_entry_ids(apps: Any, schema_editor: Any) -> None:
    usage_log = apps.get_model("accounts", "UsageLog")
    while True:
        batch = list(usage_log.objects.filter(entry_id__isnull=True).only("pk")[:5000])
        if not batch:
            return
        for row in batch:
            row.entry_id = uuid.uuid4()
        usage_log.objects.bulk_update(batch, ["entry_id"])


class Migration(migrations.Migration):
    dependencies = [("accounts", "0003_usage_entry_id")]

    operations = [migrations.RunPython(fill_entry_ids, migrations.RunPython.noop)]

"""Drop the foreign keys' own indexes where a composite index already leads with them.

Every index is written with every ledger row; these five were never the best choice for a
query. Plain DROP INDEX on both databases: SQLite would otherwise copy each table anew.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# (index, table, column): Django's names for the foreign keys' indexes, on every database.
DROPPED = [
    ("accounts_keytokenssecond_key_id_878d3939", "accounts_keytokenssecond", "key_id"),
    ("accounts_usagedaily_key_id_1e021729", "accounts_usagedaily", "key_id"),
    ("accounts_usagedaily_user_id_64d6d60d", "accounts_usagedaily", "user_id"),
    ("accounts_usagelog_key_id_c7fc4062", "accounts_usagelog", "key_id"),
    ("accounts_usagelog_user_id_24b0b6c9", "accounts_usagelog", "user_id"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0006_key_tokens_per_second"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{index}"',
                    reverse_sql=f'CREATE INDEX "{index}" ON "{table}" ("{column}")',
                )
                for index, table, column in DROPPED
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="keytokenssecond",
                    name="key",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="accounts.apikey",
                    ),
                ),
                migrations.AlterField(
                    model_name="usagedaily",
                    name="key",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="daily_usage",
                        to="accounts.apikey",
                    ),
                ),
                migrations.AlterField(
                    model_name="usagedaily",
                    name="user",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="daily_usage",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="usagelog",
                    name="key",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="usage",
                        to="accounts.apikey",
                    ),
                ),
                migrations.AlterField(
                    model_name="usagelog",
                    name="user",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="usage",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
        ),
    ]

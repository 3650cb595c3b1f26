"""A generated project of N tables shaped like an app's (keys, foreign keys, RLS with policies, defaults),
for the markdown's token budget (tests) and `bench/metadata`."""

from __future__ import annotations


def project_sql(tables: int) -> str:
    """SQL that creates `tables` tables: a `profiles` table, then tables that each reference the one
    before and `profiles`, every one with RLS on and two policies (read by anyone, write by the owner)."""
    statements = [
        "create table profiles (id uuid primary key default gen_random_uuid(), user_id uuid not null unique,"
        " display_name text not null, avatar_url text, created_at timestamptz not null default now());",
        "alter table profiles enable row level security;",
        "create policy read_profiles on profiles for select to anon, authenticated using (true);",
        "create policy own_profile on profiles for all to authenticated using (user_id = auth.uid())"
        " with check (user_id = auth.uid());",
    ]
    previous = "profiles"
    for number in range(1, tables):
        name = f"items_{number:03d}"
        statements += [
            f"create table {name} (id bigint generated always as identity primary key,"
            f" owner_id uuid not null references profiles(id) on delete cascade,"
            f" parent_id {'uuid' if previous == 'profiles' else 'bigint'} references {previous}(id),"
            f" title text not null, body text, status text not null default 'draft',"
            f" created_at timestamptz not null default now());",
            f"alter table {name} enable row level security;",
            f"create policy read_{name} on {name} for select to anon, authenticated"
            f" using (status = 'published');",
            f"create policy write_{name} on {name} for all to authenticated"
            f" using (owner_id in (select id from profiles where user_id = auth.uid()));",
        ]
        previous = name
    return "\n".join(statements)

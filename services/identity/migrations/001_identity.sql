-- Users, refresh tokens and signing keys.
create table users (
  id            uuid primary key,
  -- Stored lowercased; the unique index on lower(email) holds even if a writer forgets.
  email         text not null,
  display_name  text not null,
  -- "scrypt$N$r$p$salt$hash": parameters travel with the hash so they can be raised later.
  password_hash text not null,
  roles         text[] not null default '{customer}',
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now()
);
create unique index users_email_lower on users (lower(email));

-- Refresh tokens, stored only as SHA-256 hashes. A family is one login session: every
-- rotation adds a token to it; reuse of a rotated token revokes the whole family.
create table refresh_tokens (
  token_hash bytea primary key,
  family_id  uuid not null,
  user_id    uuid not null references users (id) on delete cascade,
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  -- Set when exchanged for a new token (single use).
  rotated_at timestamptz,
  revoked_at timestamptz
);
create index refresh_tokens_family on refresh_tokens (family_id);

-- ES256 signing keys. The private JWK is AES-256-GCM encrypted (iv || tag || ciphertext,
-- kid as associated data) with IDENTITY_KEY_ENCRYPTION_KEY. Published (JWKS) = not retired.
create table signing_keys (
  kid             text primary key,
  public_jwk      jsonb not null,
  private_key_enc bytea not null,
  active          boolean not null default false,
  created_at      timestamptz not null default now(),
  deactivated_at  timestamptz,
  retired_at      timestamptz
);
-- At most one active key, whatever replicas race.
create unique index signing_keys_one_active on signing_keys ((true)) where active;

import { sql, type Kysely } from 'kysely'

/**
 * The local bus's tables, in the state store's database but migrated on their own
 * (`bus_migrations`), so the bus and the state store can evolve separately.
 *
 * Publish and group creation serialise per subject on an advisory lock (shared for publish,
 * exclusive for a new group) so that a group created while a message is being published gets
 * that message exactly once: either the publish sees the group, or the group's backfill sees
 * the message. The lock is taken in a statement before the inserts because in READ COMMITTED
 * each statement's snapshot starts when the statement does.
 */
const MIGRATIONS: ReadonlyArray<{ version: number; name: string; statements: readonly string[] }> = [
  {
    version: 1,
    name: 'bus tables',
    statements: [
      `create table if not exists bus_messages (
        seq bigserial primary key,
        subject text not null,
        id text not null,
        data jsonb not null,
        headers jsonb not null default '{}'::jsonb,
        not_before timestamptz,
        published_at timestamptz not null default now(),
        unique (subject, id)
      )`,
      `create index if not exists bus_messages_published_at on bus_messages (published_at)`,
      `create table if not exists bus_groups (
        subject text not null,
        group_name text not null,
        created_at timestamptz not null default now(),
        primary key (subject, group_name)
      )`,
      // One row per (group, message) not yet acked or dead-lettered. available_at is when it may
      // be claimed: notBefore, a retry's time, or (state = 'leased') the lease expiry.
      `create table if not exists bus_deliveries (
        subject text not null,
        group_name text not null,
        seq bigint not null references bus_messages (seq) on delete cascade,
        delivery_count integer not null default 0,
        available_at timestamptz not null,
        state text not null default 'ready' check (state in ('ready', 'leased')),
        primary key (subject, group_name, seq)
      )`,
      `create index if not exists bus_deliveries_seq on bus_deliveries (seq)`,
      // p_msgs: [{subject, id, data, headers, notBefore?}]; returns "subject id" of the stored ones.
      `create or replace function bus_publish(p_msgs jsonb) returns setof text language plpgsql as $fn$
      #variable_conflict use_column
      begin
        -- "Resolved means stored" must not depend on the server's default.
        if current_setting('synchronous_commit') = 'off' then
          perform set_config('synchronous_commit', 'local', true);
        end if;
        perform pg_advisory_xact_lock_shared(hashtextextended('proofline.bus:' || current_schema() || ':' || s.subject, 0))
          from (select distinct e->>'subject' as subject from jsonb_array_elements(p_msgs) e order by 1) s;
        return query
        with input as (
          select e.value as m, e.ordinality as ord from jsonb_array_elements(p_msgs) with ordinality e
        ), ins as (
          insert into bus_messages (subject, id, data, headers, not_before)
          select m->>'subject', m->>'id', coalesce(m->'data', 'null'::jsonb), coalesce(m->'headers', '{}'::jsonb),
                 case when jsonb_typeof(m->'notBefore') = 'number' then to_timestamp((m->>'notBefore')::double precision / 1000) end
          from input order by ord
          on conflict (subject, id) do nothing
          returning seq, subject, id, not_before
        ), fan as (
          insert into bus_deliveries (subject, group_name, seq, available_at)
          select ins.subject, g.group_name, ins.seq, greatest(now(), ins.not_before)
          from ins join bus_groups g on g.subject = ins.subject
        )
        select ins.subject || ' ' || ins.id from ins;
      end $fn$`,
      `create or replace function bus_ensure_group(p_subject text, p_group text) returns boolean language plpgsql as $fn$
      begin
        perform pg_advisory_xact_lock(hashtextextended('proofline.bus:' || current_schema() || ':' || p_subject, 0));
        insert into bus_groups (subject, group_name) values (p_subject, p_group) on conflict do nothing;
        if not found then
          return false;
        end if;
        insert into bus_deliveries (subject, group_name, seq, available_at)
          select p_subject, p_group, m.seq, greatest(now(), m.not_before) from bus_messages m where m.subject = p_subject;
        return true;
      end $fn$`,
      // Claims and acks commit without waiting for the WAL flush: losing one in a crash only
      // means a redelivery, which at-least-once allows. Publishes and dead letters wait for it.
      // Rows are updated one primary-key lookup at a time: a queue table's statistics are often
      // stale (it was empty when last analysed) and set-based forms then plan as a scan of the
      // whole group per claim.
      `create or replace function bus_claim(p_subject text, p_group text, p_max integer, p_ack_wait_ms double precision)
      returns table (seq bigint, id text, data jsonb, headers jsonb, delivery_count integer) language plpgsql as $fn$
      #variable_conflict use_column
      declare
        r record;
        v_count integer;
      begin
        perform set_config('synchronous_commit', 'off', true);
        for r in
          select d.seq from bus_deliveries d
          where d.subject = p_subject and d.group_name = p_group and d.available_at <= now()
          order by d.seq limit p_max
          for update skip locked
        loop
          update bus_deliveries d
          set delivery_count = d.delivery_count + 1, state = 'leased', available_at = now() + p_ack_wait_ms * interval '1 millisecond'
          where d.subject = p_subject and d.group_name = p_group and d.seq = r.seq
          returning d.delivery_count into v_count;
          return query select m.seq, m.id, m.data, m.headers, v_count from bus_messages m where m.seq = r.seq;
        end loop;
      end $fn$`,
      `create or replace function bus_ack(p_subject text, p_group text, p_seqs bigint[]) returns void language plpgsql as $fn$
      declare
        v bigint;
      begin
        perform set_config('synchronous_commit', 'off', true);
        foreach v in array p_seqs loop
          delete from bus_deliveries where subject = p_subject and group_name = p_group and seq = v;
        end loop;
      end $fn$`,
    ],
  },
]

/** Creates or upgrades the bus tables; safe to run from several processes at once. */
export async function migrateBus(db: Kysely<any>): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(hashtextextended('proofline.bus.migrate:' || current_schema(), 0))`.execute(trx)
    await sql`create table if not exists bus_migrations (
      version integer primary key,
      name text not null,
      applied_at timestamptz not null default now()
    )`.execute(trx)
    const applied = await sql<{ version: number }>`select version from bus_migrations`.execute(trx)
    const done = new Set(applied.rows.map((r) => r.version))
    for (const m of MIGRATIONS) {
      if (done.has(m.version)) continue
      for (const statement of m.statements) await sql.raw(statement).execute(trx)
      await sql`insert into bus_migrations (version, name) values (${m.version}, ${m.name})`.execute(trx)
    }
  })
}

/** The latest migration version this code knows. */
export const BUS_SCHEMA_VERSION = MIGRATIONS.length

// Random schema-v1 edits on several JavaScript Yjs replicas of a crdtsync vault's Doc, and every update a vault
// could receive of them: each local transaction's update, merges of a replica's transactions (Y.mergeUpdates:
// Skip structs where the merged ones leave holes), diffs of a replica against a state vector it had earlier
// (Y.encodeStateAsUpdate: other replicas' structs and the whole delete set), and duplicates. Used by
// tests/integration/test_yjs_reorder.py, which delivers them to a vault in shuffled and reversed orders.
//
// Usage: node fuzz_replicas.mjs SPEC_FILE OUT_FILE
//   SPEC_FILE  JSON {"seed": uint32, "base": hex of the vault's full update (Vault.encode_update()),
//              "replicas": how many, "steps": how many random operations, "devices": a device id per replica,
//              "start_ms": the wall time of the first write (ms since the epoch; each step is 1 s later)}
//   OUT_FILE   receives JSON {"updates": [hex Yjs v1 update...] in the order they were made,
//              "memories", "devices", "vault": the three v1 roots once every replica has every update,
//              "state_vector": {client id: next clock} of that Doc}
// The edits follow the v1 layout (README.md "Document schema"; crdtsync/model/schema.py): a record Map per
// memory with `created` and register entries `<field>@<op id>`, tags as `t:<tag>@<op id>` entries, and every
// write deletes the entries of its register this replica sees, inserts one, and rewrites `deleted` to false.
// Same spec, same output: every random choice comes from the seed.
import { readFileSync, writeFileSync } from 'node:fs'
import * as Y from 'yjs'

const [specFile, outFile] = process.argv.slice(2)
if (!outFile) {
  console.error('usage: node fuzz_replicas.mjs SPEC_FILE OUT_FILE')
  process.exit(2)
}
const spec = JSON.parse(readFileSync(specFile, 'utf8'))

// mulberry32: a small seeded generator, so that a seed names one run.
let seed = spec.seed >>> 0
const random = () => {
  seed = (seed + 0x6D2B79F5) >>> 0
  let t = seed
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const pick = (items) => items[Math.floor(random() * items.length)]
const chance = (p) => random() < p
const hex = (n) => Array.from({ length: n }, () => Math.floor(random() * 16).toString(16)).join('')
const newOpId = () => hex(8)
const newMemoryId = () => `0190${hex(4)}-${hex(4)}-7${hex(3)}-8${hex(3)}-${hex(12)}`
const WORDS = ['tea', 'Lyon', 'neovim', 'standup', '🍵', 'ça', '日本語', 'rust', 'python', 'coffee', 'oolong']
const text = () => Array.from({ length: 1 + Math.floor(random() * 4) }, () => pick(WORDS)).join(' ')
const TAGS = ['a', 'b', 'work', 'ユニ', 'drinks']

const base = Uint8Array.from(Buffer.from(spec.base, 'hex'))
const used = new Set()
const replicas = spec.devices.slice(0, spec.replicas).map((device) => {
  const doc = new Y.Doc()
  let client
  do { client = 1 + Math.floor(random() * 0xfffffffe) } while (used.has(client))
  used.add(client)
  doc.clientID = client
  Y.applyUpdate(doc, base, 'remote')
  const replica = { device, doc, memories: doc.getMap('memories'), transactions: [], stateVectors: [] }
  doc.on('update', (update, origin, _doc, transaction) => {
    if (transaction.local) replica.transactions.push(update)
  })
  return replica
})
const updates = []
let clock = spec.start_ms
const now = () => new Date(clock).toISOString()

const visible = (replica) => Array.from(replica.memories.entries())
  .filter(([, record]) => record instanceof Y.Map).map(([id]) => id)

// One register write: delete every entry of the register this replica sees, insert one new entry.
const writeRegister = (record, field, entry) => {
  for (const key of Array.from(record.keys())) {
    if (key.startsWith(field + '@')) record.delete(key)
  }
  record.set(`${field}@${newOpId()}`, entry)
}

const VALUES = {
  content: () => text(),
  category: () => pick([null, 'prefs', 'work', 'bio']),
  source: () => pick([null, 'chat', 'src']),
  metadata: () => pick([null, JSON.stringify({ n: Math.floor(random() * 100) }), '{"list":[1,2],"ok":true}']),
}

const add = (replica) => {
  const record = new Y.Map()
  replica.memories.set(newMemoryId(), record)
  record.set('created', [now(), replica.device])
  // A creating write's entries take the empty op id and may be stored bare or as [value].
  const content = text()
  record.set('content@', chance(0.5) ? content : [content])
  if (chance(0.5)) record.set('category@', [VALUES.category() ?? 'misc'])
  if (chance(0.3)) record.set('metadata@', [JSON.stringify({ n: Math.floor(random() * 100) })])
  for (const tag of TAGS) if (chance(0.2)) record.set(`t:${tag}@`, true)
}

const edit = (replica, id) => {
  const record = replica.memories.get(id)
  const field = pick(['content', 'content', 'category', 'source', 'metadata'])
  writeRegister(record, field, [VALUES[field](), replica.device, now()])
  writeRegister(record, 'deleted', [false, replica.device, now()])
}

const retag = (replica, id) => {
  const record = replica.memories.get(id)
  const tag = pick(TAGS)
  const entries = Array.from(record.keys()).filter((key) => key.startsWith(`t:${tag}@`))
  if (entries.length) {
    for (const key of entries) record.delete(key)
  } else {
    record.set(`t:${tag}@${newOpId()}`, true)
  }
  writeRegister(record, 'deleted', [false, replica.device, now()])
}

const remove = (replica, id) => {
  writeRegister(replica.memories.get(id), 'deleted', [true, replica.device, now()])
}

// A random subset of a replica's transactions, merged: holes between them become Skip structs.
const mergeSome = (replica) => {
  const chosen = replica.transactions.filter(() => chance(0.4))
  if (chosen.length >= 2) updates.push(Y.mergeUpdates(chosen))
}

for (let step = 0; step < spec.steps; step++) {
  clock += 1000
  const replica = pick(replicas)
  const ids = visible(replica)
  const roll = random()
  const before = replica.transactions.length
  if (roll < 0.2 || ids.length === 0) {
    replica.doc.transact(() => add(replica))
  } else if (roll < 0.5) {
    replica.doc.transact(() => edit(replica, pick(ids)))
  } else if (roll < 0.62) {
    replica.doc.transact(() => retag(replica, pick(ids)))
  } else if (roll < 0.7) {
    replica.doc.transact(() => remove(replica, pick(ids)))
  } else if (roll < 0.85) {
    const other = pick(replicas)
    Y.applyUpdate(replica.doc, Y.encodeStateAsUpdate(other.doc, Y.encodeStateVector(replica.doc)), 'remote')
  } else if (roll < 0.93) {
    replica.stateVectors.push(Y.encodeStateVector(replica.doc))
  } else if (replica.stateVectors.length) {
    updates.push(Y.encodeStateAsUpdate(replica.doc, pick(replica.stateVectors)))
  } else {
    mergeSome(replica)
  }
  updates.push(...replica.transactions.slice(before))
}
for (const replica of replicas) {
  mergeSome(replica)
  for (const stateVector of replica.stateVectors) {
    if (chance(0.5)) updates.push(Y.encodeStateAsUpdate(replica.doc, stateVector))
  }
}
const duplicates = updates.filter(() => chance(0.1))
updates.push(...duplicates)

// What every replica holds once all updates reached it.
const all = new Y.Doc()
Y.applyUpdate(all, base)
for (const replica of replicas) Y.applyUpdate(all, Y.encodeStateAsUpdate(replica.doc))
if (all.store.pendingStructs !== null || all.store.pendingDs !== null) {
  console.error('the replicas together left structs or deletions pending')
  process.exit(1)
}
const stateVector = Object.fromEntries(Y.decodeStateVector(Y.encodeStateVector(all)))
writeFileSync(outFile, JSON.stringify({
  updates: updates.map((update) => Buffer.from(update).toString('hex')),
  memories: all.getMap('memories').toJSON(),
  devices: all.getMap('devices').toJSON(),
  vault: all.getMap('vault').toJSON(),
  state_vector: stateVector,
}))

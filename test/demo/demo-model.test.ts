import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adapterDigest } from '../../src/adapters/adapter-digest.js';
import { loadPeftAdapter } from '../../src/adapters/peft-loader.js';
import { SlotManager } from '../../src/adapters/slot-manager.js';
import type { ModelRunner } from '../../src/model/decoder.js';
import { evaluateLoss } from '../../src/model/evaluate.js';
import { loadModel } from '../../src/model/load-model.js';
import { Tokenizer } from '../../src/model/tokenizer.js';

/** Each shipped adapter and the held-out text of its domain (models/demo/heldout/DOMAIN.txt). */
const DOMAIN_OF: Record<string, string> = { 'python-code': 'code', legal: 'legal', verse: 'verse' };
const DOMAINS = Object.values(DOMAIN_OF);
const RANK = 8;
/**
 * Nats per token. On its own domain an adapter must beat the base by this much, and its gain there must exceed its
 * gain on any other domain by this much too.
 */
const MARGIN = 0.1;

const cacheDir = mkdtempSync(join(tmpdir(), 'loraserve-demo-'));
afterAll(() => rmSync(cacheDir, { recursive: true, force: true }));

describe('the shipped demo model and adapters (models/demo, adapters/)', () => {
  /** loss[variant][domain], variant 'base' or an adapter name. */
  const loss: Record<string, Record<string, number>> = {};
  let decoder: ModelRunner;

  beforeAll(async () => {
    const loaded = await loadModel({ modelDir: 'models/demo', quantization: 'fp32', threads: 1, cacheRoot: cacheDir, loraRank: RANK, allLogits: true });
    decoder = loaded.decoder;
    const tokenizer = Tokenizer.fromDir('models/demo');
    // All adapters resident at once, as the server holds them; the base runs on the all-zero slot 0.
    const slots = new SlotManager(loaded.config, Object.keys(DOMAIN_OF).length, RANK, 1);
    const variants: [string, number][] = [['base', 0]];
    for (const name of Object.keys(DOMAIN_OF)) {
      const dir = join('adapters', name);
      variants.push([name, slots.acquire(adapterDigest(dir), loadPeftAdapter(dir, loaded.config, { maxRank: RANK })) as number]);
    }
    const texts = DOMAINS.map((d) => tokenizer.encode(readFileSync(join('models/demo/heldout', `${d}.txt`), 'utf8')));
    for (const [variant, slot] of variants) {
      loss[variant] = {};
      for (const [i, domain] of DOMAINS.entries()) {
        slots.bindRow(0, slot);
        loss[variant][domain] = (await evaluateLoss(decoder, texts[i], { lora: slots.batch(0, [slot]) })).meanLoss;
      }
    }
  }, 60_000);
  afterAll(async () => {
    await decoder.release();
  });

  it.each(Object.entries(DOMAIN_OF))('%s is the best model for its own held-out %s text, by a clear margin over the base', (adapter, domain) => {
    for (const other of Object.keys(loss).filter((v) => v !== adapter)) {
      expect(loss[adapter][domain], `${adapter} vs ${other} on ${domain}`).toBeLessThan(loss[other][domain]);
    }
    expect(loss.base[domain] - loss[adapter][domain], `${adapter}: gain over the base on ${domain}`).toBeGreaterThan(MARGIN);
  });

  it.each(Object.entries(DOMAIN_OF))('%s lowers the loss on %s by clearly more than on the other domains', (adapter, domain) => {
    const gain = (d: string) => loss.base[d] - loss[adapter][d];
    for (const other of DOMAINS.filter((d) => d !== domain)) {
      expect(gain(domain) - gain(other), `${adapter}: gain on ${domain} vs on ${other}`).toBeGreaterThan(MARGIN);
    }
  });
});

import { describe, expect, it } from 'vitest';
import { AdapterError } from '../../src/adapters/adapter-error.js';
import type { AdapterErrorCode } from '../../src/adapters/adapter-error.js';
import { isTargeted, moduleLoraParams, parsePeftConfig } from '../../src/adapters/peft-config.js';
import type { PeftConfig } from '../../src/adapters/peft-config.js';

const SOURCE = 'adapter_config.json';
const Q0 = 'model.layers.0.self_attn.q_proj';
const Q1 = 'model.layers.1.self_attn.q_proj';
const V0 = 'model.layers.0.self_attn.v_proj';
const DOWN1 = 'model.layers.1.mlp.down_proj';

function parse(fields: Record<string, unknown>): PeftConfig {
  return parsePeftConfig({ peft_type: 'LORA', r: 8, lora_alpha: 16, target_modules: ['q_proj', 'v_proj'], ...fields }, SOURCE);
}

function refusal(fields: Record<string, unknown>): AdapterError {
  try {
    parse(fields);
  } catch (err) {
    expect(err).toBeInstanceOf(AdapterError);
    expect((err as AdapterError).path).toBe(SOURCE);
    return err as AdapterError;
  }
  throw new Error(`expected ${JSON.stringify(fields)} to be refused`);
}

function expectRefused(fields: Record<string, unknown>, code: AdapterErrorCode, ...fragments: string[]): void {
  const err = refusal(fields);
  expect(err.code).toBe(code);
  for (const fragment of fragments) expect(err.message).toContain(fragment);
}

describe('parsePeftConfig', () => {
  it('applies PEFT defaults for absent or null fields', () => {
    const config = parsePeftConfig({ peft_type: 'LORA', r: 4, lora_alpha: null, bias: null }, SOURCE);
    expect(config.loraAlpha).toBe(8);
    expect(config.useRslora).toBe(false);
    // PEFT's default targets for llama-family models.
    expect(['q_proj', 'k_proj', 'v_proj'].map((p) => isTargeted(config, `model.layers.0.self_attn.${p}`))).toEqual([true, false, true]);
    expect(moduleLoraParams(config, Q0)).toEqual({ rank: 4, alpha: 8, scale: 2 });
  });

  it('scales by alpha/r, or alpha/sqrt(r) with use_rslora', () => {
    expect(moduleLoraParams(parse({ r: 16, lora_alpha: 8 }), Q0).scale).toBe(0.5);
    expect(moduleLoraParams(parse({ r: 16, lora_alpha: 8, use_rslora: true }), Q0).scale).toBe(2);
  });

  it('refuses what it cannot serve, naming the field', () => {
    expectRefused({ peft_type: 'PREFIX_TUNING' }, 'adapter_unsupported', 'PREFIX_TUNING', 'only LORA');
    expectRefused({ peft_type: undefined }, 'adapter_invalid', 'peft_type is missing');
    expectRefused({ use_dora: true }, 'adapter_unsupported', 'use_dora', 'magnitude');
    expectRefused({ modules_to_save: ['lm_head'] }, 'adapter_unsupported', 'modules_to_save', 'lm_head');
    expectRefused({ layer_replication: [[0, 2]] }, 'adapter_unsupported', 'layer_replication');
    expectRefused({ lora_bias: true }, 'adapter_unsupported', 'lora_bias');
    expectRefused({ trainable_token_indices: [5, 6] }, 'adapter_unsupported', 'trainable_token_indices');
    expectRefused({ bias: 'all' }, 'adapter_unsupported', 'bias "all"');
    expectRefused({ bias: 'lora_only' }, 'adapter_unsupported', 'bias "lora_only"');
    expectRefused({ bias: 'some' }, 'adapter_invalid', 'bias must be');
    expectRefused({ init_lora_weights: 'pissa_niter_4' }, 'adapter_unsupported', 'init_lora_weights "pissa_niter_4"', 'path_initial_model_for_weight_conversion');
    expectRefused({ target_modules: ['q_proj', 'embed_tokens'] }, 'adapter_unsupported', '"embed_tokens"', 'token embedding or lm_head');
    expectRefused({ target_modules: ['lm_head'] }, 'adapter_unsupported', '"lm_head"');
    expectRefused({ target_modules: ['q_proj', 'c_attn'] }, 'adapter_unsupported', '"c_attn"', 'q_proj, k_proj');
    expectRefused({ target_modules: ['.*q_proj'] }, 'adapter_unsupported', 'matched literally');
  });

  it('accepts the values of those fields that leave a plain LoRA', () => {
    const config = parse({
      use_dora: false, modules_to_save: null, layer_replication: null, lora_bias: false, trainable_token_indices: null,
      init_lora_weights: 'gaussian', loftq_config: {}, megatron_config: null, bias: 'none', fan_in_fan_out: true,
    });
    expect(isTargeted(config, Q0)).toBe(true);
  });

  it('refuses malformed fields with what was found', () => {
    expectRefused({ r: undefined }, 'adapter_invalid', 'r (the LoRA rank) is missing');
    expectRefused({ r: 0 }, 'adapter_invalid', 'r must be a positive integer (found 0)');
    expectRefused({ r: 2.5 }, 'adapter_invalid', 'found 2.5');
    expectRefused({ lora_alpha: '16' }, 'adapter_invalid', 'lora_alpha must be a number');
    expectRefused({ use_rslora: 'yes' }, 'adapter_invalid', 'use_rslora must be true or false');
    expectRefused({ fan_in_fan_out: 1 }, 'adapter_invalid', 'fan_in_fan_out');
    expectRefused({ rank_pattern: { q_proj: -1 } }, 'adapter_invalid', 'rank_pattern["q_proj"] must be a positive integer');
    expectRefused({ rank_pattern: ['q_proj'] }, 'adapter_invalid', 'rank_pattern must be an object');
    expectRefused({ alpha_pattern: { 'q_proj(': 4 } }, 'adapter_invalid', 'alpha_pattern key "q_proj("', 'not a valid regular expression');
    expectRefused({ target_modules: '.*(q_proj' }, 'adapter_invalid', 'target_modules is not a valid regular expression');
    expectRefused({ target_modules: [] }, 'adapter_invalid', 'target_modules is empty');
    expectRefused({ target_modules: [3] }, 'adapter_invalid', 'target_modules must be');
    expectRefused({ layers_to_transform: [0, -1] }, 'adapter_invalid', 'layers_to_transform[1] must be a non-negative integer');
    expect(() => parsePeftConfig([1], SOURCE)).toThrow(`${SOURCE}: expected a JSON object, found an array`);
  });

  it('refuses the combinations PEFT refuses', () => {
    expectRefused({ target_modules: '.*q_proj', layers_to_transform: [0] }, 'adapter_invalid', 'layers_to_transform cannot be used');
    expectRefused({ target_modules: 'all-linear', layers_to_transform: [0] }, 'adapter_invalid', 'layers_to_transform cannot be used');
    expectRefused({ target_modules: '.*q_proj', layers_pattern: 'layers' }, 'adapter_invalid', 'layers_pattern cannot be used');
    expectRefused({ layers_pattern: 'layers' }, 'adapter_invalid', 'layers_pattern is set without layers_to_transform');
  });
});

describe('isTargeted (PEFT check_target_module_exists)', () => {
  it('matches list entries by name or dotted suffix, never by a bare substring', () => {
    const config = parse({ target_modules: ['self_attn.q_proj', 'model.layers.1.mlp.down_proj'] });
    expect(isTargeted(config, Q0)).toBe(true);
    expect(isTargeted(config, Q1)).toBe(true);
    expect(isTargeted(config, DOWN1)).toBe(true);
    expect(isTargeted(config, 'model.layers.0.mlp.down_proj')).toBe(false);
    expect(isTargeted(parse({ target_modules: ['q_proj'] }), 'model.layers.0.self_attn.qq_proj')).toBe(false);
  });

  it('full-matches a string target as a regex against the whole name', () => {
    expect(isTargeted(parse({ target_modules: 'q_proj' }), Q0)).toBe(false);
    const config = parse({ target_modules: '.*\\.1\\.(self_attn\\.q_proj|mlp\\.down_proj)' });
    expect([Q0, Q1, V0, DOWN1].map((m) => isTargeted(config, m))).toEqual([false, true, false, true]);
  });

  it('expands "all-linear" to the seven projections', () => {
    const config = parse({ target_modules: 'ALL-LINEAR' });
    expect([Q0, DOWN1, 'model.layers.0.mlp.gate_proj'].every((m) => isTargeted(config, m))).toBe(true);
    expect(isTargeted(config, 'lm_head')).toBe(false);
  });

  it('filters suffix matches by layers_to_transform, int or list', () => {
    for (const layers of [1, [1]]) {
      const config = parse({ layers_to_transform: layers });
      expect([Q0, Q1, V0].map((m) => isTargeted(config, m))).toEqual([false, true, false]);
    }
    // An empty list means every layer, as in PEFT.
    expect(isTargeted(parse({ layers_to_transform: [] }), Q0)).toBe(true);
  });

  it('takes a module named in full whatever layers_to_transform says, as PEFT does', () => {
    const config = parse({ target_modules: [Q0, 'v_proj'], layers_to_transform: [1] });
    expect([Q0, Q1, V0, 'model.layers.1.self_attn.v_proj'].map((m) => isTargeted(config, m))).toEqual([true, false, false, true]);
  });

  it('reads the layer index after layers_pattern', () => {
    expect(isTargeted(parse({ layers_to_transform: [0], layers_pattern: 'layers' }), Q0)).toBe(true);
    expect(isTargeted(parse({ layers_to_transform: [0], layers_pattern: ['h', 'blocks'] }), Q0)).toBe(false);
  });

  it('drops excluded modules, by list or regex', () => {
    const listed = parse({ exclude_modules: ['layers.0.self_attn.q_proj'] });
    expect([Q0, Q1].map((m) => isTargeted(listed, m))).toEqual([false, true]);
    const regex = parse({ exclude_modules: '.*\\.0\\..*' });
    expect([Q0, Q1, V0].map((m) => isTargeted(regex, m))).toEqual([false, true, false]);
  });
});

describe('moduleLoraParams (PEFT get_pattern_key)', () => {
  it('matches a key against the whole name or a tail after a dot, first key in file order winning', () => {
    const config = parse({
      rank_pattern: { 'layers.0.self_attn.q_proj': 2, q_proj: 4, 'mlp\\..*': 6 },
      alpha_pattern: { 'v_proj|down_proj': 32 },
    });
    expect(moduleLoraParams(config, Q0)).toEqual({ rank: 2, alpha: 16, scale: 8 });
    expect(moduleLoraParams(config, Q1)).toEqual({ rank: 4, alpha: 16, scale: 4 });
    expect(moduleLoraParams(config, V0)).toEqual({ rank: 8, alpha: 32, scale: 4 });
    expect(moduleLoraParams(config, DOWN1)).toEqual({ rank: 6, alpha: 32, scale: 32 / 6 });
    // A later, more specific key does not override an earlier match.
    const ordered = parse({ rank_pattern: { q_proj: 4, 'layers.0.self_attn.q_proj': 2 } });
    expect(moduleLoraParams(ordered, Q0).rank).toBe(4);
  });

  it('needs a dot boundary before the key and the key to reach the end of the name', () => {
    const config = parse({ rank_pattern: { proj: 2, 'self_attn': 3, '^model.layers.1.self_attn.q_proj': 5 } });
    expect(moduleLoraParams(config, Q0).rank).toBe(8);
    expect(moduleLoraParams(config, Q1).rank).toBe(5);
    // The key is one group: an alternation in it is anchored at the end as a whole.
    const alternation = parse({ rank_pattern: { 'model|v_proj': 2 } });
    expect([Q0, V0].map((m) => moduleLoraParams(alternation, m).rank)).toEqual([8, 2]);
  });

  it('uses the pattern rank under use_rslora', () => {
    const config = parse({ r: 4, lora_alpha: 8, use_rslora: true, rank_pattern: { v_proj: 16 }, alpha_pattern: { v_proj: 12 } });
    expect(moduleLoraParams(config, Q0).scale).toBe(4);
    expect(moduleLoraParams(config, V0).scale).toBe(3);
  });
});

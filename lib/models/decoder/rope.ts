// Rotary embedding frequencies as transformers computes them (modeling_rope_utils): the default
// inv_freq = 1 / θ^(2i/d), and the rope_scaling types 'linear' (positions divided by a factor) and
// 'llama3' (long wavelengths divided by the factor, short ones kept, a smooth blend between).
// Other types are refused by name rather than approximated.

export interface RopeScaling {
  rope_type?: string;
  type?: string; // the older key
  factor?: number;
  low_freq_factor?: number;
  high_freq_factor?: number;
  original_max_position_embeddings?: number;
}

/** fp32 inverse frequencies [dim/2] for a head of `dim` rotating dims. */
export function ropeInvFreq(dim: number, theta: number, scaling: RopeScaling | null, where: string): Float32Array {
  const half = dim / 2;
  // fp32 at each step, as torch computes arange(0, dim, 2).float() / dim, base ** that, 1.0 / that
  const base = Array.from({ length: half }, (_, i) => Math.fround(1 / Math.fround(Math.pow(theta, Math.fround((2 * i) / dim)))));
  const kind = scaling ? scaling.rope_type ?? scaling.type ?? 'default' : 'default';
  const num = (key: keyof RopeScaling, fallback?: number): number => {
    const v = scaling?.[key] ?? fallback;
    if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) throw new Error(`${where}: ${key} must be a positive number, got ${JSON.stringify(scaling?.[key])}`);
    return v;
  };
  if (kind === 'default') return Float32Array.from(base);
  if (kind === 'linear') {
    const f = num('factor');
    return Float32Array.from(base, (v) => v / f);
  }
  if (kind === 'llama3') {
    const factor = num('factor');
    const low = num('low_freq_factor');
    const high = num('high_freq_factor');
    const old = num('original_max_position_embeddings');
    if (!(high > low)) throw new Error(`${where}: high_freq_factor must exceed low_freq_factor`);
    const lowWavelen = old / low;
    const highWavelen = old / high;
    return Float32Array.from(base, (inv) => {
      const wavelen = (2 * Math.PI) / inv;
      if (wavelen > lowWavelen) return inv / factor;
      if (wavelen < highWavelen) return inv;
      const smooth = (old / wavelen - low) / (high - low);
      return (1 - smooth) * (inv / factor) + smooth * inv;
    });
  }
  throw new Error(`${where}: rope type '${kind}' is not supported (default, linear, llama3)`);
}

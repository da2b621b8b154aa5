"""The same GGUF with every tensor stored as F32: dequantized by the gguf package, metadata copied.

Lets the generate bench run node-llama-cpp at the precision this package computes in (fp32), beside
the quantized file. Usage: python gguf_to_f32.py IN.gguf OUT.gguf (the reference environment's Python).
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize


def main(src: str, dst: str) -> None:
    reader = GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(dst, arch)
    for name, field in reader.fields.items():
        # the header counts and the architecture are written by the writer itself
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "general.file_type":
            writer.add_key_value(name, 0, GGUFValueType.UINT32)  # ALL_F32
            continue
        main_type = field.types[0]
        sub_type = field.types[-1] if main_type == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), main_type, sub_type=sub_type)
    for t in reader.tensors:
        # the reader's shape is GGML's (fastest dimension first); numpy's is the reverse
        values = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        writer.add_tensor(t.name, values.reshape(tuple(int(d) for d in reversed(t.shape))), raw_dtype=GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

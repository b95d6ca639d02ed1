// Package filecopy executes copy plans: output files assembled from byte
// ranges of source files (safetensors shards), with zero bytes where no range
// lands. It is the engine under `fmoe extract` and `fmoe pack-experts`; the
// callers decide every name, offset and size, filecopy decides nothing.
//
// Execution: outputs are split into fixed-size chunks; a dispatcher hands
// chunks out in order to a bounded pool of workers, each owning a buffer from
// a fixed pool, so memory is Jobs×2×ChunkSize whatever the model size. A
// worker reads the chunk's source ranges (ReadAt), writes the chunk at its
// fixed offset (WriteAt into an atomicfile.File), and passes it to the
// output's hasher, which consumes chunks strictly in order. The output bytes
// and their hash are therefore the same whatever the number of workers. When
// the last chunk of an output has been hashed the file is committed (fsync,
// rename, fsync dir) and reported; on error or cancellation every uncommitted
// output is aborted and its temporary file removed.
//
// The hash is XXH3-64 (github.com/zeebo/xxh3) of the whole file, written as
// 16 lowercase hex digits.
package filecopy

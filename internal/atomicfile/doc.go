// Package atomicfile is fmoe's one way of writing a final output file.
//
// Every output is first written to a temporary file in the destination
// directory, named ".<name>.fmoe-tmp-<random>" (see IsTemp), then synced,
// closed and renamed over the final name, and finally the directory itself is
// synced so the rename survives a crash. On any error, and when the context
// is canceled, the temporary file is removed, so a final name only ever holds
// a complete file.
//
// Write covers sequential writers; Create returns a File of a fixed size that
// many goroutines fill concurrently with WriteAt at precomputed offsets, then
// Commit or Abort.
package atomicfile

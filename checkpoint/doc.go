// Package checkpoint opens a Hugging Face / MLX checkpoint directory:
// config.json plus either model.safetensors or model.safetensors.index.json
// and its shards. It inventories every tensor from the safetensors headers
// alone (no tensor data is read at Open) and keeps the files open read-only
// for positioned reads.
package checkpoint

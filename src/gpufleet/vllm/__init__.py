"""What gpufleet knows about vLLM, in one place: its engine knobs (`knobs`: inventory key <->
`vllm serve` flag), the releases' differences (`releases`), its memory arithmetic (`memory`),
its serve flags (`flags`), and the model facts it loads (`models`, with the bundled `catalog/`)."""

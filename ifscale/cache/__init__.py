"""What ifscale stores, and the one rule every stored thing follows.

Four stores under `paths.cache_dir`, each keyed by what determines its contents
(`ifscale.cache.keys`: every key and its version, in one module):

  arrays.py   `ArrayStore`: dicts of NumPy arrays and an info dict (trained models, the models
              of Table 3's selections, tokenizers) in `<kind>/<key hash>/`
  spectra.py  `SpectrumStore`: the curvature spectra of Arnoldi, RandProj and Exact, stored
              with orbax in `fits/<key hash>/`, and the checkpoints of an unfinished fit
  chunks.py   `ChunkStore`: scores in resumable chunks, split into shards, merged, in
              `scores/<method hash>/<data hash>/`

The integrity rule (`ifscale.cache.integrity`): when a thing is committed, the key that made
it and a sha256 of every byte of it are recorded beside it; when it is read, both are
checked. Anything that fails (a flipped byte, a truncated or missing file, a file from
another key, an edited record) is refused in one log line naming the file, removed, and
built again. Every write is whole or absent (`ifscale.cache.atomic`): a temporary file or
folder renamed into place, so a killed writer never leaves a part under a valid name.
"""

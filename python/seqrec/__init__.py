"""seqrec: a sequential recommender (GRU4Rec / SASRec two-tower model trained
on a CPU), the same engine as the ``seqrec`` command line.

    import seqrec
    model = seqrec.train("ratings.csv", epochs=5, seed=1)
    ids, scores = model.recommend([["i1", "i7", "i3"]], k=10)
    model.evaluate("ratings.csv")
    model.save("model.safetensors")
    same = seqrec.load("model.safetensors")

Settings are the command line's, by their config keys (``seqrec train
--print-config`` lists them); errors raise ``SeqrecError`` with seqrec's
message.
"""

from ._seqrec import PRESETS, Model, SeqrecError, load, train

__all__ = ["Model", "PRESETS", "SeqrecError", "load", "train"]

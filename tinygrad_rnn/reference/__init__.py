"""Hand-derived backpropagation through time in plain numpy: an independent witness.

Nothing here imports the engine.  Each module writes a textbook network the way
the textbooks do, forward and backward by hand, with the derivation beside the
code, so that autograd can be checked against it (and it against finite
differences):

  hello_rnn   the one-hot "hell" -> "ello" many-to-many tanh RNN, summed cross-entropy,
              plus the original post's two mistakes, reproduced
  time_rnn    Deep Learning from Scratch 2, chapters 5 and 6: RNN, TimeRNN (stateful truncated
              BPTT), LSTM, TimeLSTM (the book's f, g, i, o gate layout, with an adapter to
              ours), TimeEmbedding, TimeAffine, TimeSoftmaxWithLoss, SimpleRnnlm
  count_ones  the linear recurrence s_k = s_{k-1} * w_rec + x_k * w_x with MSE loss
"""
from . import count_ones, hello_rnn, time_rnn

__all__ = ["hello_rnn", "time_rnn", "count_ones"]

"""Keras models the way users write them, small: GRU stacks with dense heads, per-step heads, input scaling and
batch normalization, GRUs that return their state, as Sequential and Functional models (also nested in each
other), and the forms grukit refuses. Each function builds
one model with Keras's random weights (tests/test_load_keras.py seeds and nudges them)."""

import numpy as np
import keras
from keras import layers

T, I = 10, 1  # the seed example's input: 10 steps of one feature
F = 3  # input features of the models that scale their inputs per feature


def _sequential(*stack, features=I):
    return keras.Sequential([keras.Input((T, features)), *stack])


def _chain(*stack, features=I):
    """The same stack as a Functional model: keras.Model(inputs, outputs)."""
    x = inputs = keras.Input((T, features))
    for layer in stack:
        x = layer(x)
    return keras.Model(inputs, x)


def _adapted_normalization():
    norm = layers.Normalization(axis=-1)
    norm.adapt(np.random.default_rng(3).normal(2.0, 3.0, (32, T, F)).astype(np.float32))
    return norm


# --- forms grukit loads ---------------------------------------------------------------------------------
def seed_example():
    # The model users bring: Sequential([GRU(50, activation='tanh', input_shape=(10, 1)), Dense(1)]).
    return _sequential(layers.GRU(50, activation="tanh"), layers.Dense(1))


def reset_after_false():
    return _sequential(layers.GRU(16, reset_after=False), layers.Dense(1))


def two_stacked():
    return _sequential(layers.GRU(12, return_sequences=True), layers.Dropout(0.2), layers.GRU(8), layers.Dense(2))


def every_step():
    return _sequential(layers.GRU(12, return_sequences=True), layers.Dense(3))


def softmax_head():
    return _sequential(layers.GRU(12, use_bias=False), layers.Dense(4, activation="softmax"))


def sigmoid_no_input_layer():
    return keras.Sequential([layers.GRU(6, input_shape=(T, I), reset_after=False),
                             layers.Dense(1, activation="sigmoid")])


def dropout_relu_softmax():
    return _sequential(layers.GRU(12), layers.Dropout(0.3), layers.Dense(8, activation="relu"),
                       layers.Dense(4, activation="softmax"))


def dropout_relu_softmax_functional():
    return _chain(layers.GRU(12), layers.Dropout(0.3), layers.Dense(8, activation="relu"),
                  layers.Dense(4, activation="softmax"))


def tanh_between_dense():
    return _chain(layers.GRU(10), layers.Dense(6, activation="tanh"), layers.Dense(2))


def relu6_layer():
    return _sequential(layers.GRU(10), layers.Dense(6), layers.ReLU(max_value=6), layers.Dense(3))


def activation_layers():
    return _chain(layers.GRU(10), layers.Dense(6), layers.Activation("sigmoid"), layers.Dense(3),
                  layers.Activation("softmax"))


def time_distributed():
    return _sequential(layers.GRU(12, return_sequences=True),
                       layers.TimeDistributed(layers.Dense(5, activation="relu")),
                       layers.TimeDistributed(layers.Dense(3)))


def dense_chain_every_step():
    # A plain Dense on a sequence: Keras applies it per step.
    return _chain(layers.GRU(12, return_sequences=True), layers.Dense(6, activation="relu"), layers.Dense(2))


def batch_norm_after_dense():
    return _sequential(layers.GRU(10), layers.Dense(8), layers.BatchNormalization(), layers.Activation("relu"),
                       layers.Dense(2))


def batch_norm_after_gru():
    return _chain(layers.GRU(10), layers.BatchNormalization(), layers.Dense(3))


def batch_norm_after_relu():
    return _sequential(layers.GRU(10), layers.Dense(8, activation="relu"),
                       layers.BatchNormalization(center=False, epsilon=0.01), layers.Dense(2))


def batch_norm_between_grus():
    return _sequential(layers.GRU(8, return_sequences=True), layers.BatchNormalization(scale=False),
                       layers.GRU(6, reset_after=False), layers.Dense(1))


def batch_norm_every_step():
    return _chain(layers.GRU(10, return_sequences=True), layers.TimeDistributed(layers.Dense(6)),
                  layers.BatchNormalization(), layers.ReLU(), layers.TimeDistributed(layers.Dense(2)))


def normalization_adapted():
    return _sequential(_adapted_normalization(), layers.GRU(10), layers.Dense(2), features=F)


def normalization_in_config():
    norm = layers.Normalization(mean=[1.0, -2.0, 0.5], variance=[4.0, 0.25, 1.0])
    return _chain(norm, layers.GRU(10, reset_after=False), layers.Dense(2), features=F)


def rescaling():
    return _sequential(layers.Rescaling(0.5, offset=-1.0), layers.GRU(10), layers.Dense(2), features=F)


def rescaling_per_feature_after_normalization():
    return _chain(_adapted_normalization(), layers.Rescaling(np.array([0.5, 2.0, -1.0]), offset=[0.0, 1.0, 0.25]),
                  layers.GRU(10, return_sequences=True), layers.GRU(6), layers.Dense(2), features=F)


def identities():
    return _chain(layers.GaussianNoise(0.5), layers.GRU(10, return_sequences=True), layers.SpatialDropout1D(0.2),
                  layers.GRU(8), layers.GaussianDropout(0.2), layers.Flatten(), layers.Dense(3))


def bidirectional_every_step():
    return _sequential(layers.Bidirectional(layers.GRU(6, return_sequences=True)), layers.GRU(5),
                       layers.Dense(2))


def bidirectional_time_distributed():
    return _chain(layers.Bidirectional(layers.GRU(6, return_sequences=True, reset_after=False)),
                  layers.TimeDistributed(layers.Dense(3, activation="sigmoid")))


def everything_functional():
    # Input scaling, a stacked GRU, a per-step head with batch normalization: one of each, for the
    # without-Keras load.
    return _chain(_adapted_normalization(), layers.Rescaling(2.0), layers.GRU(8, return_sequences=True),
                  layers.Dropout(0.1), layers.GRU(6, return_sequences=True), layers.TimeDistributed(layers.Dense(5)),
                  layers.BatchNormalization(), layers.ReLU(max_value=6), layers.Dense(3, activation="softmax"),
                  features=F)


def state_head():
    # The head on the final state a GRU returns beside its sequence (return_state=True), relu6 as a function.
    inputs = keras.Input((T, I))
    _, h_n = layers.GRU(8, return_sequences=True, return_state=True)(inputs)
    h = layers.Dense(6, activation=keras.activations.relu6)(h_n)
    return keras.Model(inputs, layers.Dense(3, activation="softmax")(layers.Dropout(0.2)(h)))


def state_output():
    # No head: the model's output is the last GRU's final state.
    inputs = keras.Input((T, I))
    h = layers.GRU(8, return_sequences=True)(inputs)
    _, h_n = layers.GRU(6, reset_after=False, return_state=True)(h)
    return keras.Model(inputs, h_n)


def output_beside_state():
    # A GRU that returns its state too, of which the head takes the sequence.
    inputs = keras.Input((T, I))
    y, _ = layers.GRU(8, return_sequences=True, return_state=True)(inputs)
    return keras.Model(inputs, layers.TimeDistributed(layers.Dense(2, activation="tanh"))(y))


def nested_sequentials():
    # Sequential models as layers of a Functional one: the GRU stack and the head.
    grus = keras.Sequential([layers.GRU(8, return_sequences=True), layers.GRU(6)], name="grus")
    head = keras.Sequential([layers.Dense(5, activation="relu"), layers.Dropout(0.2), layers.Dense(2)], name="head")
    return _chain(_adapted_normalization(), grus, head, features=F)


def functional_in_sequential():
    head_in = keras.Input((8,))
    head = keras.Model(head_in, layers.Dense(2, activation="sigmoid")(layers.Dense(4, activation="tanh")(head_in)))
    return _sequential(layers.GRU(8), head)


# --- forms grukit refuses --------------------------------------------------------------------------------
def add_of_two_paths():
    inputs = keras.Input((T, I))
    a = layers.GRU(6, name="path_a")(inputs)
    b = layers.GRU(6, name="path_b")(inputs)
    return keras.Model(inputs, layers.Dense(1)(layers.Add(name="merge")([a, b])))


def two_inputs():
    first, second = keras.Input((T, I), name="first"), keras.Input((T, I), name="second")
    x = layers.Concatenate(name="join")([first, second])
    return keras.Model([first, second], layers.Dense(1)(layers.GRU(4)(x)))


def two_outputs():
    inputs = keras.Input((T, I))
    h = layers.GRU(6, name="shared_gru")(inputs)
    return keras.Model(inputs, [layers.Dense(1, name="out_a")(h), layers.Dense(2, name="out_b")(h)])


def shared_dense():
    inputs = keras.Input((T, I))
    dense = layers.Dense(4, name="twice")
    return keras.Model(inputs, dense(dense(layers.GRU(4)(inputs))))


def learned_initial_state():
    inputs = keras.Input((T, I))
    h0 = layers.Dense(4)(layers.Flatten()(inputs))
    return keras.Model(inputs, layers.Dense(1)(layers.GRU(4, name="seeded")(inputs, initial_state=h0)))


def conv1d_front_end():
    return _sequential(layers.Conv1D(4, 3, padding="same", name="front"), layers.GRU(6), layers.Dense(1))


def self_attention():
    inputs = keras.Input((T, I))
    h = layers.GRU(8, return_sequences=True)(inputs)
    h = layers.MultiHeadAttention(num_heads=2, key_dim=4, name="attend")(h, h)
    return keras.Model(inputs, layers.Dense(1)(layers.GRU(4)(h)))


def bidirectional_final_state():
    return _sequential(layers.Bidirectional(layers.GRU(6), name="bi"), layers.Dense(1))


def normalization_inverted():
    return _sequential(layers.Normalization(mean=[0.0, 1.0, 2.0], variance=[1.0, 1.0, 1.0], invert=True,
                                            name="denormalize"), layers.GRU(4), layers.Dense(1), features=F)


def bidirectional_state():
    inputs = keras.Input((T, I))
    _, h_forward, _ = layers.Bidirectional(layers.GRU(6, return_sequences=True, return_state=True), name="bi")(inputs)
    return keras.Model(inputs, layers.Dense(1, name="head")(h_forward))

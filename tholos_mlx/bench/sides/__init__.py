"""The sides of a comparison: raw mlx-lm, our server, a peer, and the client that times them."""

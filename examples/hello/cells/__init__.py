"""The cells of this mesh: a store of visit counts and a greeter that uses it."""

"""Code the tests share: in-memory fakes of the backends, and what they are held to."""

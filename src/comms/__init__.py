"""The wire: generated protobuf/gRPC modules (``make proto``) plus the few hand-written
facts both ends share (audio format, log format). Never edit the ``*_pb2*`` files."""

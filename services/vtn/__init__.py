"""The OpenADR 3.1 VTN: gridflex's programs, events, VENs, resources, reports and subscriptions over OpenADR 3."""

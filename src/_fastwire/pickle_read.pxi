# Placeholder: this part of the core has not been written yet.

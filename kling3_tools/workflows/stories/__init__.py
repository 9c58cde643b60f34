"""Stories: many shots, chained by reference and cut into one film."""

"""What changes stores: releases, the undo ladder, recovery, explicit rollbacks and restores."""

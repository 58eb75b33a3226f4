-- Device accounts made with the old default ACL lose sensors/#: on the
-- paper's topics the payload names the device, so any device could write
-- any other's readings (issue 9). Accounts with an ACL of their own keep it.
UPDATE users SET publish = '["vigil/+/%u/#"]'
 WHERE role = 'device' AND publish = '["vigil/+/%u/#","sensors/#"]';

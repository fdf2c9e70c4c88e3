// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title PHash: the SD result rules shared by NodeStaking (slash evidence) and TaskLedger (settlement).
/// @notice An SD result is the list of its images' 64-bit DCT pHashes. Its result hash, which the node
/// signs, is keccak256(abi.encodePacked(phashes)) (each element padded to 32 bytes; Python:
/// `chain.signing.sd_result_hash`). Two SD results match when they have the same number of images and
/// every image's pHashes are within the Hamming threshold (distance < threshold).
library PHash {
    /// @dev The result hash of an SD result.
    function hash(uint64[] calldata phashes) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(phashes));
    }

    /// @dev Hamming distance of two 64-bit pHashes (SWAR popcount).
    function hamming(uint64 a, uint64 b) internal pure returns (uint256) {
        unchecked {
            uint256 v = uint256(a ^ b);
            v = v - ((v >> 1) & 0x5555555555555555);
            v = (v & 0x3333333333333333) + ((v >> 2) & 0x3333333333333333);
            v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0f;
            return ((v * 0x0101010101010101) & 0xffffffffffffffff) >> 56;
        }
    }

    /// @dev Same number of images and every image within the threshold. Two empty lists match here:
    /// callers decide what an empty list means (NodeStaking: the invalid-args verdict; TaskLedger: refused).
    function within(uint64[] calldata x, uint64[] calldata y, uint256 threshold) internal pure returns (bool) {
        uint256 len = x.length;
        if (len != y.length) return false;
        for (uint256 i; i < len; ++i) {
            if (hamming(x[i], y[i]) >= threshold) return false;
        }
        return true;
    }
}
